/**
 * The Edits sidebar (the "Fact Lens" activity-bar container): the model in use heads the tree
 * (name, backend, parameters; the journal's file in its tooltip), one node per applied edit
 * below it (`subject: true → new`, method and layer) with inline Show diff and Revert, and the
 * title actions Revert all, Save edited model…, Export journal…, Import journal…. It follows
 * EngineService.onDidChangeEdits, so every apply, revert and restore shows at once.
 */
import * as vscode from 'vscode';
import type { EditRecord } from '../engine/protocol.js';
import type { EngineService } from './engine.js';
import { fillTemplate } from '../formats/template.js';

export const EDITS_VIEW_ID = 'factlens.edits';

export type EditsNode = { kind: 'model' } | { kind: 'edit'; record: EditRecord } | { kind: 'empty' };

const METHOD: Record<string, string> = { rome: 'ROME', memit: 'MEMIT', ft: 'FT', 'ft-l': 'FT+L' };

/** `subject: true → new` (true target when the record knows it). */
export function editLabel(r: EditRecord): string {
  return `${r.request.subject}: ${r.request.targetTrue ? `${r.request.targetTrue} → ` : '→ '}${r.request.target}`;
}

export function editDescription(r: EditRecord): string {
  const layers = r.layers.length === 1 ? `layer ${r.layers[0]}` : `layers ${r.layers.join(', ')}`;
  return `${METHOD[r.method] ?? r.method}, ${layers}`;
}

export class EditsTreeProvider implements vscode.TreeDataProvider<EditsNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<EditsNode | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly subs: vscode.Disposable[];
  private readonly root: EditsNode = { kind: 'model' };

  constructor(private readonly engine: EngineService) {
    this.subs = [engine.onDidChangeEdits(() => this.changed.fire(undefined)), engine.onDidChangeStatus(() => this.changed.fire(undefined))];
  }

  getChildren(node?: EditsNode): EditsNode[] {
    if (!node) return [this.root];
    if (node.kind !== 'model') return [];
    const edits = this.engine.edits;
    return edits.length ? edits.map((record) => ({ kind: 'edit', record })) : [{ kind: 'empty' }];
  }

  getTreeItem(node: EditsNode): vscode.TreeItem {
    if (node.kind === 'model') {
      const s = this.engine.status;
      const m = s.model;
      const item = new vscode.TreeItem(m ? m.name : 'No model loaded', vscode.TreeItemCollapsibleState.Expanded);
      item.id = 'factlens.model';
      item.iconPath = new vscode.ThemeIcon('circuit-board');
      item.contextValue = 'factlens.model';
      if (m) {
        item.description = `${m.backend} · ${(m.parameterCount / 1e6).toFixed(1)}M parameters · ${m.nLayer} layers`;
        const md = new vscode.MarkdownString(
          `**${m.name}** (${m.modelType}) on \`${m.backend}\`\n\n${m.parameterCount.toLocaleString('en')} parameters, ${m.nLayer} layers, MLP width ${m.dMlp}\n\n` +
            `Folder: \`${m.dir}\`\n\nEdit journal: \`${this.engine.journalFile ?? '(none yet)'}\``,
        );
        item.tooltip = md;
      } else {
        item.description = s.state;
      }
      return item;
    }
    if (node.kind === 'empty') {
      const item = new vscode.TreeItem('No edits yet: run "Fact Lens: Edit fact…" on a prompt line');
      item.iconPath = new vscode.ThemeIcon('info');
      return item;
    }
    const r = node.record;
    const item = new vscode.TreeItem(editLabel(r), vscode.TreeItemCollapsibleState.None);
    item.id = `factlens.edit.${r.id}`;
    item.description = editDescription(r);
    item.iconPath = new vscode.ThemeIcon('edit');
    item.contextValue = 'factlens.edit';
    item.tooltip = new vscode.MarkdownString(
      `**${editLabel(r)}**\n\n\`${fillTemplate(r.request.prompt, r.request.subject)}\`\n\n${editDescription(r)} · ${new Date(r.createdAt).toLocaleString()}\n\nid \`${r.id}\``,
    );
    item.command = { command: 'factlens.edits.showDiff', title: 'Show diff', arguments: [node] };
    return item;
  }

  dispose(): void {
    this.changed.dispose();
    for (const s of this.subs) s.dispose();
  }
}

/** The edit id a tree command was invoked on (a node, or an id from other callers). */
export function editIdOf(arg: unknown): string | undefined {
  if (typeof arg === 'string') return arg;
  const n = arg as EditsNode | undefined;
  return n && n.kind === 'edit' ? n.record.id : undefined;
}
