/**
 * Bad input gets a clear error naming the problem and where, never wrong numbers, a crash or a
 * hang (issue #13, items 5, 6, 7, 9): the built CLI on real model folders derived from the
 * embedded tinyworld model (a changed config.json, a NaN written into a weight, a FIFO in place
 * of the weights).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BACKEND_ARGS, buildCli, factlens, ROOT } from './helpers/cli.js';

const TINY = path.join(ROOT, 'engine', 'assets', 'tinyworld');
let work: string;

/** A model folder: tinyworld's files linked, config.json changed by `patch`, weights replaced by `weights` when given. */
function variant(name: string, patch: (c: Record<string, unknown>) => void, weights?: (dir: string) => void): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(TINY)) {
    if (f === 'config.json' || (weights && f === 'model.safetensors')) continue;
    fs.symlinkSync(path.join(TINY, f), path.join(dir, f));
  }
  const config = JSON.parse(fs.readFileSync(path.join(TINY, 'config.json'), 'utf8'));
  patch(config);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  weights?.(dir);
  return dir;
}

const predict = (dir: string) => factlens(['predict', 'The capital of France is', '--model', dir, '--json', ...BACKEND_ARGS], {}, 60_000);

before(async () => {
  await buildCli();
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-input-'));
});
after(() => fs.rmSync(work, { recursive: true, force: true }));

describe('item 5: config.json is validated against the tensors; non-finite outputs are errors', () => {
  const cases: Array<[string, (c: Record<string, unknown>) => void, RegExp, string]> = [
    ['n_head that does not divide n_embd', (c) => (c.n_head = 7), /n_head 7 does not divide the model width 256 \(n_embd\)/, 'n_head'],
    ['n_head 0', (c) => (c.n_head = 0), /n_head must be a whole number ≥ 1, not 0/, 'n_head'],
    ['n_layer smaller than the checkpoint', (c) => (c.n_layer = 4), /n_layer is 4 but the checkpoint has 8 layers/, 'n_layer'],
    ['a negative layer_norm_epsilon', (c) => (c.layer_norm_epsilon = -1e-5), /layer_norm_epsilon must be a positive number/, 'layer_norm_epsilon'],
  ];
  for (const [what, patch, message, field] of cases) {
    test(`${what}: an error naming the field and config.json, no numbers`, async () => {
      const dir = variant(what.replace(/\W+/g, '-'), patch);
      const r = await predict(dir);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, message);
      assert.ok(r.stderr.includes(path.join(dir, 'config.json')), r.stderr);
      assert.match(r.stderr, new RegExp(`field: ${field}\\b.*code: BAD_CONFIG`));
    });
  }

  test('a NaN weight: NON_FINITE naming the first non-finite site, not "prob": null', async () => {
    const dir = variant('nan-weight', () => {}, (d) => {
      const buf = fs.readFileSync(path.join(TINY, 'model.safetensors'));
      const n = Number(buf.readBigUInt64LE(0));
      const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
      const t = header['transformer.h.2.mlp.c_fc.bias'] ?? header['h.2.mlp.c_fc.bias'];
      assert.equal(t.dtype, 'F16');
      buf.writeUInt16LE(0x7e00, 8 + n + t.data_offsets[0] + 2 * 17); // element 17 := NaN
      fs.writeFileSync(path.join(d, 'model.safetensors'), buf);
    });
    const r = await predict(dir);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /not finite numbers: the first non-finite values appear at blocks\.2\.mlp\.hook_post/);
    assert.match(r.stderr, /code: NON_FINITE/);
  });
});

describe('item 6: input longer than the context is a usage error naming the field and the limit', () => {
  const long = (n: number) => `${'word '.repeat(n)}{} is in`;
  const edit = (args: string[]) =>
    factlens(['edit', '-s', 'Paris', '--method', 'ft', '--layer', '3', '--tokens', '0', ...BACKEND_ARGS, ...args], {}, 120_000);

  test('edit: prompt plus target past 128 tokens', async () => {
    const r = await edit(['-p', long(118), '-t', 'Japan and the rest of the world over there']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--prompt \(\d+ tokens\) followed by --target \(\d+ tokens\) is \d+ tokens; tinyworld reads at most 128/);
    assert.match(r.stderr, /field: --target.*limit: 128.*code: PROMPT_TOO_LONG/);
    assert.doesNotMatch(r.stderr, /GatherV2|internal error/);
  });

  test('edit: a --check prompt past the context names that --check', async () => {
    const r = await edit(['-p', '{} is in', '-t', 'Japan', '--check', 'The first one is fine', '--check', long(130)]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--check 2 is \d+ tokens; tinyworld reads at most 128/);
    assert.match(r.stderr, /field: --check 2/);
  });

  test('eval: a record whose paraphrase is too long is skipped and reported; the others are measured', async () => {
    const cf = JSON.parse(fs.readFileSync(path.join(ROOT, 'samples', 'counterfact.json'), 'utf8')) as Array<Record<string, any>>;
    const records = [cf[0], { ...cf[1], paraphrase_prompts: [long(140).replace('{}', cf[1].requested_rewrite.subject)] }];
    const file = path.join(work, 'long-cf.json');
    fs.writeFileSync(file, JSON.stringify(records));
    const r = await factlens(['eval', '--dataset', file, '--method', 'none', '--json', ...BACKEND_ARGS], {}, 120_000);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.n, 1);
    assert.equal(out.skipped.length, 1);
    assert.equal(out.skipped[0].index, 1);
    assert.match(out.skipped[0].reason, /tokens; the context is 128/);
  });
});

describe('item 7: only regular files are opened', () => {
  test('a FIFO named model.safetensors is an error at once, not a hang', async () => {
    const dir = variant('fifo', () => {}, (d) => execFileSync('mkfifo', [path.join(d, 'model.safetensors')]));
    const r = await predict(dir);
    assert.notEqual(r.code, null, 'the CLI hung on the FIFO and was killed');
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /model\.safetensors is a FIFO \(named pipe\), not a regular file/);
  });

  test('a FIFO as config.json too', async () => {
    const dir = path.join(work, 'fifo-config');
    fs.mkdirSync(dir);
    for (const f of fs.readdirSync(TINY)) if (f !== 'config.json') fs.symlinkSync(path.join(TINY, f), path.join(dir, f));
    execFileSync('mkfifo', [path.join(dir, 'config.json')]);
    const r = await predict(dir);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /config\.json is a FIFO \(named pipe\), not a regular file/);
  });
});

describe('item 9: strict numbers and lists, and saying what actually happened', () => {
  const trace = (args: string[]) => factlens(['trace', 'The capital of [France] is', '--samples', '2', '--json', ...BACKEND_ARGS, ...args], {}, 120_000);
  for (const [args, message] of [
    [['--noise', ''], /--noise needs a number ≥ 0 ≤ 1000000 \(plain decimal\), not ''/],
    [['--noise', '0x10'], /--noise needs .* not '0x10'/],
    [['--noise', '1e38'], /--noise needs .* not '1e38'/],
    [['--kind', ','], /--kind has an empty item in ','/],
    [['--kind', 'mlp,'], /--kind has an empty item in 'mlp,'/],
  ] as Array<[string[], RegExp]>) {
    test(`trace ${args.map((a) => JSON.stringify(a)).join(' ')} is a usage error`, async () => {
      const r = await trace(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stdout, '');
    });
  }

  test('an edit whose target is already the model\'s answer says so instead of applying it', async () => {
    const r = await factlens(['edit', '-p', 'The capital of {} is', '-s', 'France', '-t', 'Paris', '--method', 'ft', '--layer', '3', ...BACKEND_ARGS], {}, 120_000);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--target "Paris" is already the model's answer now \(its top next token\)/);
  });

  test('a subject whose first character is split over byte tokens ([🇫🇷France]) is found and traced', async () => {
    const r = await factlens(['trace', 'The capital of [🇫🇷France] is', '--samples', '2', '--kind', 'hidden', '--json', ...BACKEND_ARGS], {}, 120_000);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    const [s, e] = out.subject_range;
    // Every token of the flag and "France", and nothing of " is".
    assert.equal(out.tokens[e - 1], 'France');
    assert.equal(out.tokens[e], ' is');
    assert.equal(out.tokens[s], ' \ufffd');
    assert.equal(out.tokens[s - 1], ' of');
  });
});
