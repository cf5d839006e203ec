/**
 * The `factlens` command end to end: builds the bundle once (scripts/build.mjs), then runs
 * `node bin/factlens.js ...` as a user would and checks stdout, stderr and exit codes.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const ROOT = path.resolve(__dirname, '..');
const BIN = path.join(ROOT, 'bin', 'factlens.js');
const PROMPT = 'The capital of France is';
/** Honour the suite's backend choice (see test/helpers/model.ts). */
const BACKEND_ARGS = process.env.FACTLENS_TEST_BACKEND ? ['--backend', process.env.FACTLENS_TEST_BACKEND] : [];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function factlens(args: string[], bin = BIN): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.FACTLENS_DEBUG;
    const child = spawn(process.execPath, [bin, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function assertNoStack(r: Run): void {
  assert.doesNotMatch(r.stderr, /\n\s+at .+:\d+:\d+\)?\n/, `stack trace in stderr:\n${r.stderr}`);
}

before(async () => {
  await promisify(execFile)(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs'), '--only', 'engine cli'], {
    cwd: ROOT,
  });
  assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'engine', 'cli.js')), 'the build wrote dist/engine/cli.js');
  for (const f of ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm']) {
    assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'engine', f)), `the build copied ${f} beside the bundle`);
  }
});

describe('factlens predict', () => {
  test('--json prints the prediction: Paris after "The capital of France is"', async () => {
    const r = await factlens(['predict', PROMPT, '--json', ...BACKEND_ARGS]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(Object.keys(out), ['model', 'backend', 'tokens', 'top']);
    assert.equal(out.model, 'tinyworld');
    assert.ok(['node-gpu', 'node', 'webgpu', 'native', 'wasm', 'cpu'].includes(out.backend), out.backend);
    for (const t of out.tokens) {
      assert.deepEqual(Object.keys(t), ['id', 'text']);
      assert.equal(typeof t.id, 'number');
    }
    assert.equal(out.tokens.map((t: { text: string }) => t.text).join(''), PROMPT);
    assert.equal(out.top.length, 10);
    for (const c of out.top) {
      assert.deepEqual(Object.keys(c), ['id', 'token', 'prob', 'logprob']);
      assert.ok(Math.abs(Math.exp(c.logprob) - c.prob) < 1e-6);
    }
    assert.equal(out.top[0].token, ' Paris');
    assert.ok(out.top[0].prob > 0.5, `p(Paris) = ${out.top[0].prob}`);
    for (let i = 1; i < out.top.length; i++) assert.ok(out.top[i].prob <= out.top[i - 1].prob, 'sorted by prob');
  });

  test('prints a readable table by default, tokens quoted so spaces show', async () => {
    const r = await factlens(['predict', PROMPT, '--top', '3', ...BACKEND_ARGS]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0], /^model tinyworld · backend \S+ · 5 prompt tokens$/);
    assert.equal(lines[1], 'prompt: "The" " capital" " of" " France" " is"');
    const header = lines.findIndex((l) => /^rank\s+token\s+prob\s+logprob$/.test(l));
    assert.ok(header > 0, r.stdout);
    const rows = lines.slice(header + 1);
    assert.equal(rows.length, 3);
    assert.match(rows[0], /^\s*1 {2}" Paris"\s+\d+(\.\d+)?%\s+-\d+\.\d{4}$/);
    // Columns are aligned: every row ends at the same column.
    assert.equal(new Set([lines[header], ...rows].map((l) => l.length)).size, 1, r.stdout);
    assert.match(r.stderr, /loaded tinyworld .* on \S+ in \d+ ms/, 'progress goes to stderr');
  });

  test('a missing model folder: exit 1, the folder named, no stack trace', async () => {
    const r = await factlens(['predict', PROMPT, '--model', '/nonexistent', ...BACKEND_ARGS]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^factlens: .*\/nonexistent/);
    assert.match(r.stderr, /\n {2}file: \/nonexistent/, 'the error data on a second line');
    assertNoStack(r);
  });

  test('an unknown option: exit 2 with the usage line', async () => {
    const r = await factlens(['predict', PROMPT, '--frobnicate']);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^factlens: unknown option '--frobnicate'\n/);
    assert.match(r.stderr, /usage: factlens predict "<prompt>"/);
    assertNoStack(r);
  });

  test('--backend bogus: exit 2 naming the backends to choose from', async () => {
    const r = await factlens(['predict', PROMPT, '--backend', 'bogus']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^factlens: --backend must be one of node-gpu, node, webgpu, native, wasm, cpu, not 'bogus'\n/);
    assertNoStack(r);
  });

  test('other usage errors: no prompt, empty prompt, bad --top, unquoted prompt', async () => {
    for (const [args, msg] of [
      [['predict'], /missing the prompt/],
      [['predict', ''], /the prompt is empty/],
      [['predict', PROMPT, '--top', 'many'], /--top needs a whole number/],
      [['predict', 'The', 'capital'], /quote it/],
      [['frobnicate'], /unknown command 'frobnicate'/],
    ] as const) {
      const r = await factlens([...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg);
      assertNoStack(r);
    }
  });
});

describe('factlens --version and --help', () => {
  test('--version: the package version and every backend, with the default', async () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    const r = await factlens(['--version']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^factlens ${pkg.version.replace(/\./g, '\\.')} `));
    for (const name of ['node-gpu', 'node', 'webgpu', 'native', 'wasm', 'cpu']) {
      assert.match(r.stdout, new RegExp(`^ {2}${name} +(default|available|unavailable)`, 'm'), name);
    }
    // An unavailable backend says why.
    for (const line of r.stdout.split('\n').filter((l) => / unavailable/.test(l))) assert.match(line, /unavailable {2}\S/);
    assert.match(r.stdout, /^default backend: (node-gpu|node|webgpu|native|wasm|cpu)$/m);
  });

  test('--version --json', async () => {
    const r = await factlens(['--version', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout);
    assert.deepEqual(
      v.backends.map((b: { name: string }) => b.name),
      ['node-gpu', 'node', 'webgpu', 'native', 'wasm', 'cpu'],
    );
    for (const b of v.backends) if (!b.available) assert.ok(b.reason, `${b.name} says why it is unavailable`);
    assert.ok(v.backends.find((b: { name: string }) => b.name === v.defaultBackend).available);
    assert.ok(v.embeddedModel, 'the bundle finds the embedded model');
  });

  test('--help lists the commands; help predict shows its options', async () => {
    const top = await factlens(['--help']);
    assert.equal(top.code, 0);
    assert.match(top.stdout, /^usage: factlens <command>/m);
    assert.match(top.stdout, /^ {2}predict +\S/m);
    const sub = await factlens(['help', 'predict']);
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /^usage: factlens predict "<prompt>"/);
    for (const opt of ['--model DIR', '--top K', '--backend NAME', '--json']) assert.ok(sub.stdout.includes(opt), opt);
    const flag = await factlens(['predict', '--help']);
    assert.equal(flag.stdout, sub.stdout);
  });

  test('the launcher explains a missing build', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-bin-'));
    try {
      // The launcher's folder as shipped (factlens.js and the code-cache loader beside it), no dist/.
      fs.cpSync(path.dirname(BIN), path.join(tmp, 'bin'), { recursive: true });
      const r = await factlens(['--version'], path.join(tmp, 'bin', 'factlens.js'));
      assert.equal(r.code, 1);
      assert.match(r.stderr, /run npm run build first/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('factlens trace: the quality verdict', () => {
  // A misspelt fact the model does not know: the trace means nothing, and says so.
  const WEAK = ['trace', 'The captial of [Frnace] is', '--samples', '10', '--kind', 'hidden', ...BACKEND_ARGS];

  test('the text output has a quality line naming why; --json has the verdict and per-cell standard errors', async () => {
    const text = await factlens([...WEAK, '--quiet']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^quality: MEANINGLESS TRACE — clean p\(" a"\) [\d.]+% is not above the corrupted [\d.]+%/m);
    const r = await factlens([...WEAK, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.quality.verdict, 'meaningless');
    assert.ok(out.clean_prob <= out.corrupted_prob, `clean ${out.clean_prob} vs corrupted ${out.corrupted_prob}`);
    assert.ok(out.quality.reasons.length >= 1);
    const [lo, hi] = out.quality.color_domain;
    assert.equal(lo, out.corrupted_prob);
    assert.ok(hi >= lo + 0.1, `colour domain ${lo}..${hi}`);
    // One standard error per score cell, positive where the corrupted samples differ.
    assert.equal(out.stderr.hidden.length, out.scores.hidden.length);
    out.stderr.hidden.forEach((row: number[], t: number) => assert.equal(row.length, out.scores.hidden[t].length));
    assert.ok(out.corrupted_stderr > 0);
    assert.ok(out.stderr.hidden.flat().every((x: number) => Number.isFinite(x) && x >= 0));
  });
});
