/**
 * The protocol's types hold both sides together: a field renamed or retyped in
 * engine/protocol/ fails to compile in the server (handler table, validation schemas), the
 * client and the extension.
 *
 * Two halves. The `@ts-expect-error` lines below are checked by `npm run typecheck` (an
 * expected error that stops occurring is itself an error, so they cannot rot). The tests copy
 * the engine, extension and webview sources to a temporary folder, rename or retype one
 * protocol field there, run the real compiler and require errors in each side's files.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CancellationToken } from 'vscode-jsonrpc';
import type { EngineClient } from '../engine/client/index.js';
import { Predict, Trace, type Method, type ParamsOf, type ResultOf, type TraceParams } from '../engine/protocol.js';
import * as v from '../engine/server/validate.js';

const ROOT = path.resolve(__dirname, '..');

// -------------------------------------------------------------------------------------------
// Compile-time checks (npm run typecheck)
// -------------------------------------------------------------------------------------------

/** Never called: it exists for the compiler. */
export function typeLevelChecks(client: EngineClient): void {
  const fields = { prompt: v.str(), subject: v.opt(v.str()) };
  // @ts-expect-error a schema that lacks fields of TraceParams (window, samples, ...) does not compile
  v.objOf<TraceParams>(fields);
  v.objOf<{ prompt: string; subject?: string }>(fields);
  // @ts-expect-error a field the protocol does not have (a renamed one) does not compile
  v.objOf<{ prompt: string; subject?: string }>({ ...fields, windowSize: v.opt(v.int()) });
  // @ts-expect-error a retyped field (number in the schema, string in the protocol) does not compile
  v.objOf<{ prompt: string; subject?: number }>(fields);
  // @ts-expect-error an optional protocol field needs opt(...) in the schema
  v.objOf<{ prompt: string; subject?: string }>({ prompt: v.str(), subject: v.str() });

  // The client sends exactly the protocol's params and returns its result type.
  void client.request(Trace, { prompt: 'The capital of France is', window: 2 });
  // @ts-expect-error a renamed field in a request does not compile
  void client.request(Trace, { prompt: 'The capital of France is', windowSize: 2 });
  // @ts-expect-error a retyped field in a request does not compile
  void client.request(Predict, { prompt: 'x', k: '5' });
  void client.request(Predict, { prompt: 'x' }).then((r) => {
    // @ts-expect-error the result is the protocol's Prediction, which has no `answer`
    void r.answer;
  });

  // The server's handler table maps each method to exactly its params and result.
  type Run<M extends Method> = (params: ParamsOf<M>, token: CancellationToken) => ResultOf<M>;
  const revert: Run<'edit/revert'> = (p) => ({ reverted: p.id, remaining: [] });
  // @ts-expect-error a handler reading a field its params do not have
  const badParams: Run<'edit/revert'> = (p) => ({ reverted: p.editId, remaining: [] });
  // @ts-expect-error a handler returning another shape than the protocol's result
  const badResult: Run<'edit/revert'> = (p) => ({ reverted: p.id });
  void [revert, badParams, badResult];
}

// -------------------------------------------------------------------------------------------
// A rename in a copy of the sources, compiled for real
// -------------------------------------------------------------------------------------------

interface TsError {
  file: string;
  message: string;
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-protocol-'));
after(() => fs.rmSync(work, { recursive: true, force: true }));

function copySources(): void {
  for (const dir of ['engine', 'formats', 'extension', 'webviews']) {
    fs.cpSync(path.join(ROOT, dir), path.join(work, dir), {
      recursive: true,
      filter: (src) => !src.includes(`${path.sep}assets`) && (fs.statSync(src).isDirectory() || src.endsWith('.ts')),
    });
  }
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(work, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(work, 'node_modules'), 'dir');
  const cfg = JSON.parse(fs.readFileSync(path.join(ROOT, 'tsconfig.json'), 'utf8'));
  cfg.include = ['engine/**/*.ts', 'formats/**/*.ts', 'extension/**/*.ts', 'webviews/**/*.ts'];
  fs.writeFileSync(path.join(work, 'tsconfig.json'), JSON.stringify(cfg));
}

function typecheck(): TsError[] {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', path.join(work, 'tsconfig.json'), '--noEmit', '--pretty', 'false'], { cwd: work, stdio: 'pipe' });
    return [];
  } catch (e) {
    const out = String((e as { stdout?: Buffer }).stdout ?? '');
    const errors = [...out.matchAll(/^(.+?)\(\d+,\d+\): error (TS\d+: .*)$/gm)].map((m) => ({ file: m[1].replace(/\\/g, '/'), message: m[2] }));
    assert.ok(errors.length, `tsc failed without errors it could report:\n${out}`);
    return errors;
  }
}

/** Applies an edit to one protocol file, compiles, restores the file; the errors. */
function withChange(file: string, from: string, to: string): TsError[] {
  const p = path.join(work, file);
  const original = fs.readFileSync(p, 'utf8');
  assert.ok(original.includes(from), `${file} contains ${JSON.stringify(from)}`);
  fs.writeFileSync(p, original.replace(from, to));
  try {
    return typecheck();
  } finally {
    fs.writeFileSync(p, original);
  }
}

function assertFails(errors: TsError[], where: Record<string, RegExp>): void {
  for (const [side, re] of Object.entries(where)) {
    const hits = errors.filter((e) => re.test(e.file));
    assert.ok(hits.length, `expected a compile error in the ${side} (${re}); got:\n${errors.map((e) => `${e.file}: ${e.message}`).join('\n')}`);
  }
}

describe('a protocol change fails to compile on both sides (a copy of the sources, real tsc)', () => {
  test('the unchanged copy compiles', () => {
    copySources();
    assert.deepEqual(typecheck(), []);
  });

  test('renaming TraceOptions.window: the server schema and the extension that sends it', () => {
    const errors = withChange('engine/protocol/trace.ts', '  window?: number;', '  windowSize?: number;');
    assertFails(errors, { server: /^engine\/server\//, extension: /^extension\/traceCommand\.ts$/ });
  });

  test('retyping TraceOptions.samples (number → string): the server schema and the extension', () => {
    const errors = withChange('engine/protocol/trace.ts', '  samples?: number;', '  samples?: string;');
    assertFails(errors, { server: /^engine\/server\/schemas\.ts$/, extension: /^extension\/traceCommand\.ts$/ });
  });

  test('renaming ModelLoadParams.dir: server, client (journal) and extension', () => {
    const errors = withChange('engine/protocol/model.ts', '  dir?: string;\n  /** Compute backend', '  folder?: string;\n  /** Compute backend');
    assertFails(errors, { server: /^engine\/server\//, client: /^engine\/client\//, extension: /^extension\/engine\.ts$/ });
  });

  test('renaming EditRevertParams.id: server handler and schema, client journal', () => {
    const errors = withChange('engine/protocol/edit.ts', 'export interface EditRevertParams {\n  id: string;', 'export interface EditRevertParams {\n  editId: string;');
    assertFails(errors, { 'server schema': /^engine\/server\/schemas\.ts$/, 'server handler': /^engine\/server\/core\.ts$/, client: /^engine\/client\// });
  });
});
