/**
 * The extension's manifest and static parts, without VS Code: contributed commands are the ones
 * extension.ts registers, menus and settings are wired, the TextMate grammar tokenizes prompt
 * lines as intended (vscode-textmate + oniguruma, as VS Code does), the webview HTML has the
 * strict CSP, messages are typed, and the dependency rules hold (extension/ imports only the
 * engine protocol and client; webviews/ neither vscode nor the engine runtime).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { contentSecurityPolicy, webviewHtml } from '../webviews/html.js';
import { isHostToView, isViewToHost } from '../webviews/shared/channel.js';
import { TRACE_VIEW } from '../webviews/trace/protocol.js';
import { colorDomain, figureSpec, heatmapSpec, tokenLabels, cellTooltip, windowRange } from '../webviews/trace/spec.js';
import { windowLayers, type TraceResult } from '../engine/trace/types.js';
import type { Theme } from '../webviews/shared/theme.js';

const ROOT = path.resolve(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const read = (p: string) => fs.readFileSync(path.join(ROOT, p), 'utf8');

function sources(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)));
}

function imports(file: string): Array<{ spec: string; typeOnly: boolean }> {
  const text = read(file);
  const out: Array<{ spec: string; typeOnly: boolean }> = [];
  const re = /^\s*(import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push({ spec: m[3], typeOnly: !!m[2] });
  return out;
}

describe('manifest', () => {
  test('main, engines, activation, icon and scripts', () => {
    assert.equal(pkg.main, './dist/extension.js');
    assert.match(pkg.engines.vscode, /^\^1\.\d+\.0$/);
    assert.ok(pkg.activationEvents.includes('onLanguage:prompts'));
    assert.ok(pkg.activationEvents.includes('onWebviewPanel:factlens.trace'));
    assert.ok(fs.existsSync(path.join(ROOT, pkg.icon)));
    assert.match(pkg.scripts.package, /vsce package/);
    assert.match(pkg.scripts['test:e2e'], /test\/e2e\/run\.mjs/);
    // vsce refuses @types/vscode newer than engines.vscode.
    const types = pkg.devDependencies['@types/vscode'].replace(/^[~^]/, '');
    const engine = pkg.engines.vscode.replace(/^[~^]/, '');
    assert.ok(types.split('.').map(Number)[1] <= engine.split('.').map(Number)[1], `@types/vscode ${types} ≤ engines.vscode ${engine}`);
  });

  test('every contributed command is registered, and every registered command contributed', () => {
    const registered = new Set([...read('extension/extension.ts').matchAll(/command\('(factlens\.[\w.]+)'/g)].map((m) => m[1]));
    const contributed = new Set(pkg.contributes.commands.map((c: { command: string }) => c.command));
    assert.deepEqual([...registered].sort(), [...contributed].sort());
    const trace = pkg.contributes.commands.find((c: { command: string }) => c.command === 'factlens.tracePrompt');
    // The full title (no category) so the context menu, too, reads "Fact Lens: Trace this prompt".
    assert.equal(trace.title, 'Fact Lens: Trace this prompt');
    assert.equal(trace.category, undefined);
  });

  test('"Trace this prompt" is in the editor context menu for prompt files, selections and fact files', () => {
    const item = pkg.contributes.menus['editor/context'].find((m: { command: string }) => m.command === 'factlens.tracePrompt');
    assert.ok(item);
    for (const k of ['editorLangId == prompts', 'editorHasSelection', 'factlens.factFile']) assert.ok(item.when.includes(k), k);
  });

  test('settings: model folder, backend, samples, noise, window', () => {
    const props = pkg.contributes.configuration.properties;
    for (const k of ['factlens.model.folder', 'factlens.engine.backend', 'factlens.trace.samples', 'factlens.trace.noise', 'factlens.trace.window']) {
      assert.ok(props[k], k);
    }
    assert.deepEqual(props['factlens.engine.backend'].enum, ['auto', 'node-gpu', 'node', 'webgpu', 'native', 'wasm', 'cpu']);
    const config = read('extension/config.ts');
    for (const k of Object.keys(props)) {
      if (k === 'factlens.codeLens.enabled' || k === 'factlens.engine.startOnActivation') continue;
      assert.ok(config.includes(`'${k.replace('factlens.', '')}'`), `config.ts reads ${k}`);
    }
  });

  test('the .vsix holds the engine, the webview bundles and the embedded model', () => {
    const ignore = read('.vscodeignore');
    for (const p of ['!dist/extension.js', '!dist/engine/server.js', '!dist/engine/*.wasm', '!dist/webviews/*.js', '!engine/assets/tinyworld/model.safetensors', '!engine/assets/tinyworld/tokenizer.json', '!engine/assets/tinyworld/facts.jsonl']) {
      assert.ok(ignore.includes(p), p);
    }
    const build = read('scripts/build.mjs');
    assert.match(build, /entry: 'extension\/extension\.ts'/);
    assert.match(build, /external: \['vscode'\]/);
    assert.match(build, /webviews\/\$\{view\}\/main\.ts/);
  });
});

describe('dependency rules', () => {
  test('extension/ imports from engine/ only the protocol and the client', () => {
    for (const f of sources('extension')) {
      for (const { spec } of imports(f)) {
        const abs = spec.startsWith('.') ? path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, f)), spec)) : spec;
        if (abs.startsWith('engine/')) assert.ok(/^engine\/(protocol|client\/index)\.js$/.test(abs), `${f} imports ${spec}`);
        assert.ok(!/tensorflow|tfjs/.test(abs), `${f} imports ${spec}`);
      }
    }
  });

  test('formats/ (the prompt and fact file formats both the engine and the extension read) imports nothing of either', () => {
    for (const f of sources('formats')) {
      for (const { spec } of imports(f)) {
        assert.ok(spec.startsWith('./'), `${f} imports ${spec}: file-format modules stay pure (no vscode, engine, tfjs)`);
      }
    }
  });

  test('webviews/ import neither vscode nor engine code (engine types only)', () => {
    for (const f of sources('webviews')) {
      for (const { spec, typeOnly } of imports(f)) {
        assert.notEqual(spec, 'vscode', f);
        const abs = spec.startsWith('.') ? path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, f)), spec)) : spec;
        if (abs.startsWith('engine/') || abs.startsWith('extension/')) assert.ok(typeOnly, `${f}: ${spec} must be a type-only import`);
        if (abs.startsWith('engine/')) assert.match(abs, /^engine\/protocol\//, `${f}: ${spec}: webviews take engine types from engine/protocol/ only`);
      }
    }
  });
});

describe('prompts grammar (vscode-textmate)', () => {
  async function tokenize(lines: string[]) {
    const vsctm = await import('vscode-textmate');
    const onig = await import('vscode-oniguruma');
    const wasm = fs.readFileSync(require.resolve('vscode-oniguruma/release/onig.wasm'));
    await onig.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
    const registry = new vsctm.Registry({
      onigLib: Promise.resolve({ createOnigScanner: (p: string[]) => new onig.OnigScanner(p), createOnigString: (s: string) => new onig.OnigString(s) }),
      loadGrammar: async () => vsctm.parseRawGrammar(read('syntaxes/prompts.tmLanguage.json'), 'prompts.tmLanguage.json'),
    });
    const grammar = (await registry.loadGrammar('source.prompts'))!;
    let state = vsctm.INITIAL;
    return lines.map((line) => {
      const r = grammar.tokenizeLine(line, state);
      state = r.ruleStack;
      return r.tokens.map((t) => ({ text: line.slice(t.startIndex, t.endIndex), scopes: t.scopes.slice(1) }));
    });
  }
  const scopeOf = (toks: Array<{ text: string; scopes: string[] }>, text: string) => toks.find((t) => t.text === text)?.scopes.at(-1);

  test('comments, subject, arrow, answer, escapes', async () => {
    const [c, p, e, t] = await tokenize([
      '# a comment [x]',
      'The capital of [France] is => Paris',
      'The \\[x\\] of [Y] is',
      '[Paris] is in   # trailing',
    ]);
    assert.equal(scopeOf(c, '# a comment [x]') ?? c[0].scopes.at(-1), c.length === 1 ? 'comment.line.number-sign.prompts' : c[0].scopes.at(-1));
    assert.ok(c.every((t) => t.scopes.some((s) => s.startsWith('comment.'))));
    assert.equal(scopeOf(p, 'France'), 'variable.other.subject.prompts');
    assert.equal(scopeOf(p, '['), 'punctuation.definition.subject.begin.prompts');
    assert.equal(scopeOf(p, ']'), 'punctuation.definition.subject.end.prompts');
    assert.equal(scopeOf(p, '=>'), 'keyword.operator.arrow.prompts');
    assert.ok(p.some((t) => t.text.includes('Paris') && t.scopes.includes('string.unquoted.answer.prompts')));
    assert.equal(scopeOf(e, '\\['), 'constant.character.escape.prompts');
    assert.equal(scopeOf(e, 'Y'), 'variable.other.subject.prompts');
    assert.ok(t.some((x) => x.text.startsWith('#') && x.scopes.some((s) => s.startsWith('comment.'))));
    assert.equal(scopeOf(t, 'Paris'), 'variable.other.subject.prompts');
  });
});

describe('webview page and messages', () => {
  test('strict CSP: nothing by default, scripts by nonce, no unsafe-eval or unsafe-inline', () => {
    const csp = contentSecurityPolicy({ cspSource: 'https://x.vscode-cdn.net', nonce: 'abc' });
    assert.match(csp, /^default-src 'none'/);
    assert.match(csp, /script-src 'nonce-abc'/);
    assert.doesNotMatch(csp, /unsafe-eval|unsafe-inline/);
    const html = webviewHtml({ title: 't', scriptUri: 'https://x/trace.js', cspSource: 'https://x', nonce: 'abc' });
    assert.match(html, /<script nonce="abc" src="https:\/\/x\/trace.js"><\/script>/);
    assert.equal((html.match(/<script/g) ?? []).length, 1);
  });

  test('message guards', () => {
    assert.ok(isViewToHost(TRACE_VIEW, { type: 'ready' }));
    assert.ok(isViewToHost(TRACE_VIEW, { type: 'rerun', requestId: 1, input: {}, settings: {} }));
    assert.ok(!isViewToHost(TRACE_VIEW, { type: 'rerun' }), 'requests need a request id');
    assert.ok(!isViewToHost(TRACE_VIEW, { type: 'trace/result', requestId: 1 }), 'a notification is not a request');
    assert.ok(!isViewToHost(TRACE_VIEW, { type: 'revert', requestId: 1 }), 'another view\'s request');
    assert.ok(isHostToView(TRACE_VIEW, { type: 'trace/progress', runId: 1, fraction: 0.5, message: '' }));
    assert.ok(isHostToView(TRACE_VIEW, { type: 'reply', requestId: 3, ok: true }));
    assert.ok(!isHostToView(TRACE_VIEW, null) && !isHostToView(TRACE_VIEW, 'x') && !isHostToView(TRACE_VIEW, { type: 'rerun' }));
  });
});

describe('heatmap specs (recorded trace)', () => {
  const r = JSON.parse(read('test/fixtures/trace-alafield.json')) as TraceResult;
  const theme: Theme = { kind: 'dark', highContrast: false, foreground: '#ccc', descriptionForeground: '#999', background: '#1f1f1f', border: '#444', fontFamily: 'sans-serif', fontSize: 13 };

  test('subject tokens starred; colour scale from the corrupted p to the clean p (or the peak, or corrupted + 0.1)', () => {
    assert.deepEqual(tokenLabels(r), ['The', ' headquarters', ' of', ' Al*', 'af*', 'ield*', ' is', ' in']);
    for (const k of ['hidden', 'mlp', 'attn'] as const) {
      const [lo, hi] = colorDomain(r, k);
      assert.equal(lo, r.corrupted_prob);
      // One scale for the three charts: full colour is the clean p (the engine's rule, quality.ts).
      assert.equal(hi, Math.max(...(['hidden', 'mlp', 'attn'] as const).flatMap((j) => r.scores[j]!.flat()), r.clean_prob, r.corrupted_prob + 0.1));
      const spec = heatmapSpec(r, k, theme) as { encoding: { color: { scale: { scheme: string; domain: number[]; clamp: boolean } } } };
      assert.deepEqual(spec.encoding.color.scale.domain, [lo, hi]);
      assert.equal(spec.encoding.color.scale.clamp, true);
      assert.equal(spec.encoding.color.scale.scheme, { hidden: 'purples', mlp: 'greens', attn: 'reds' }[k]);
    }
  });

  test('window ranges match the engine; tooltips are exact', () => {
    for (let l = 0; l < 8; l++) assert.deepEqual(windowRange(l, r.window, 8), windowLayers(l, r.window, 8));
    const tip = cellTooltip(r, 'mlp', { t: 4, l: 2, p: r.scores.mlp![4][2] });
    assert.ok(tip.includes(r.scores.mlp![4][2].toPrecision(6)));
    assert.match(tip, /layers 1–2 \(centre 2\)/);
    assert.match(tip, /token 4 "af" \(subject\)/);
  });

  test('the export figure has the three panels side by side', () => {
    const f = figureSpec(r, theme, { background: '#fff' }) as { hconcat: unknown[]; background: string };
    assert.equal(f.hconcat.length, 3);
    assert.equal(f.background, '#fff');
  });
});
