/** The extension's settings (package.json contributes.configuration, section "factlens"). */
import * as vscode from 'vscode';
import type { TraceSettings } from '../webviews/trace/protocol.js';

export type BackendSetting = 'auto' | 'node-gpu' | 'node' | 'webgpu' | 'native' | 'wasm' | 'cpu';

export interface FactLensConfig {
  /** Model folder; empty: the embedded tinyworld model. */
  modelFolder: string;
  backend: BackendSetting;
  samples: number;
  noise: '3sigma' | number;
  /** 0: the engine's default for the model's depth. */
  window: number;
  /** Documents for edit statistics; 0: the whole corpus (the engine's default). */
  statsSamples: number;
  /** Inline before → after decorations of specificity checks. */
  specificityDecorations: boolean;
}

export function readConfig(): FactLensConfig {
  const c = vscode.workspace.getConfiguration('factlens');
  const folder = (c.get<string>('model.folder') ?? '').trim();
  const noiseRaw = c.get<string | number>('trace.noise', '3sigma');
  const noiseNum = typeof noiseRaw === 'number' ? noiseRaw : Number(noiseRaw);
  return {
    modelFolder: folder ? resolveFolder(folder) : '',
    backend: c.get<BackendSetting>('engine.backend', 'auto'),
    samples: Math.max(1, Math.round(c.get<number>('trace.samples', 10))),
    noise: noiseRaw === '3sigma' || noiseRaw === '' || !Number.isFinite(noiseNum) ? '3sigma' : noiseNum,
    window: Math.max(0, Math.round(c.get<number>('trace.window', 0))),
    statsSamples: Math.max(0, Math.round(c.get<number>('edit.statsSamples', 0))),
    specificityDecorations: c.get<boolean>('specificity.decorations', true),
  };
}

/** `~` and workspace-relative folders. */
function resolveFolder(folder: string): string {
  if (folder.startsWith('~/')) return `${process.env.HOME ?? ''}${folder.slice(1)}`;
  const ws = vscode.workspace.workspaceFolders?.[0];
  if (ws && !/^([a-zA-Z]:)?[\\/]/.test(folder)) return vscode.Uri.joinPath(ws.uri, folder).fsPath;
  return folder;
}

/** The trace settings a new trace starts with. */
export function traceSettings(cfg = readConfig()): TraceSettings {
  return { samples: cfg.samples, noise: cfg.noise, window: cfg.window };
}
