/**
 * Specificity checks on the embedded tinyworld model: `predict/batch` answers every prompt of
 * real prompt files exactly as a single `predict` does (same top-k ids, probabilities within
 * 1e-5, across chunk sizes); the related/changed classification; the check prompts read from
 * `.prompts` and CounterFact files (lines where the prompt strings are); the "before" cache;
 * checks after a real rank-one edit; and both requests over the engine's real protocol.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import * as path from 'node:path';
import { predict } from '../engine/predict.js';
import { predictBatch, planChunks, targetTokenId } from '../engine/predict-batch.js';
import { BeforeCache, StateCache, checkSpecificity } from '../engine/specificity/check.js';
import { classifyCheck, namesSubject, relatedEdits, summarizeEdit, type EditedSubject } from '../engine/specificity/classify.js';
import { applyEdit, listEdits, revertAllEdits } from '../engine/edit/apply.js';
import { modelContentHash } from '../engine/edit/hash.js';
import type { EditRecord } from '../engine/edit/types.js';
import type { LoadedModel } from '../engine/model/load.js';
import { checkFileKind, checkFilePrompts } from '../formats/check-prompts.js';
import { EditApply, EditRevert, EvalRun, ModelLoad, PredictBatch, SpecificityCheckRequest } from '../engine/protocol.js';
import { runEvaluation, evaluationSummary } from '../engine/eval/run.js';
import type { EngineClient } from '../engine/client/index.js';
import { model as sharedModel } from './helpers/model.js';
import { TINYWORLD } from './helpers/golden.js';
import { spawnClient, ROOT } from './helpers/engine-process.js';
import { SLOW, slowTest } from './helpers/tier.js';

const SAMPLES = path.join(ROOT, 'samples');
const CF_PATH = path.join(TINYWORLD, 'counterfact-dev.json');

/** Every checkable prompt of the sample files and of the first CounterFact dev records. */
function realPrompts(): string[] {
  const out: string[] = [];
  for (const f of fs.readdirSync(SAMPLES)) {
    const kind = checkFileKind(f);
    if (kind) out.push(...checkFilePrompts(fs.readFileSync(path.join(SAMPLES, f), 'utf8'), kind).prompts.map((p) => p.prompt));
  }
  const cf = JSON.parse(fs.readFileSync(CF_PATH, 'utf8')).slice(0, 12);
  out.push(...checkFilePrompts(JSON.stringify(cf, null, 1), 'json').prompts.map((p) => p.prompt));
  return out;
}

/**
 * A real weight change without computing one: a seeded rank-one delta on layer 3's MLP output,
 * large enough to move some answers. (ROME's own edits are tested in edit.test.ts; the CLI test
 * below runs a real ROME edit.)
 */
function rankOneRecord(m: LoadedModel, scale: number, seed: number, subject: string, target: string): EditRecord {
  const f = m.config.dMlp;
  const d = m.config.dModel;
  let x = seed;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
  const u = Array.from({ length: f }, () => rnd() * scale);
  const v = Array.from({ length: d }, () => rnd());
  return {
    id: `test-${seed}`,
    request: { prompt: '{} is', subject, target },
    method: 'rome',
    layers: [3],
    deltas: [{ kind: 'rank-one', layer: 3, u, v }],
    info: {},
    modelHash: modelContentHash(m),
    createdAt: new Date().toISOString(),
  };
}

describe('predict/batch = predict on every prompt', () => {
  test('real prompt files: same top-10 ids, probabilities within 1e-5, whatever the chunking', async () => {
    const m = await sharedModel();
    const prompts = realPrompts();
    assert.ok(prompts.length >= 60, `${prompts.length} prompts`);
    const single = prompts.map((p) => predict(m, p, 10).top);
    for (const tokensPerChunk of [4096, 64]) {
      const { predictions, chunks } = predictBatch(m, prompts, { k: 10, tokensPerChunk });
      if (tokensPerChunk === 64) assert.ok(chunks > 5, `${chunks} chunks`);
      predictions.forEach((b, i) => {
        assert.equal(b.prompt, prompts[i]);
        assert.deepEqual(b.top.map((c) => c.id), single[i].map((c) => c.id), `top ids of ${JSON.stringify(prompts[i])}`);
        b.top.forEach((c, j) => assert.ok(Math.abs(c.prob - single[i][j].prob) < 1e-5, `${prompts[i]} #${j}: ${c.prob} vs ${single[i][j].prob}`));
      });
    }
  });

  test('named targets: the probability of the target\'s first token, as predict ranks it', async () => {
    const m = await sharedModel();
    const { predictions } = predictBatch(m, ['The capital of France is', 'The capital of Japan is'], { k: 3, targets: ['Paris', ' Tokyo'] });
    const [fr, jp] = predictions;
    assert.equal(fr.targets[0].token, ' Paris');
    assert.equal(fr.targets[0].id, fr.top[0].id);
    assert.ok(Math.abs(fr.targets[0].prob - fr.top[0].prob) < 1e-9);
    assert.equal(jp.targets[1].token, ' Tokyo');
    assert.ok(jp.targets[1].prob > 0.5 && fr.targets[1].prob < 0.01, `${jp.targets[1].prob} ${fr.targets[1].prob}`);
  });

  test('chunks are sorted by length and stay within the token budget', () => {
    const lengths = [9, 3, 5, 3, 12, 7, 1];
    const chunks = planChunks(lengths, 12);
    assert.deepEqual(chunks.flat().sort(), [0, 1, 2, 3, 4, 5, 6]);
    for (const c of chunks) assert.ok(c.length === 1 || c.length * Math.max(...c.map((i) => lengths[i])) <= 12, JSON.stringify(c));
    const flat = chunks.flat().map((i) => lengths[i]);
    assert.deepEqual(flat, [...flat].sort((a, b) => a - b));
  });

  test('a bad prompt names its index', async () => {
    const m = await sharedModel();
    assert.throws(() => predictBatch(m, ['The capital of France is', '']), (e: Error & { data?: { field?: string } }) => e.data?.field === 'prompts[1]');
  });
});

describe('related / changed classification', () => {
  const edited: EditedSubject[] = [
    { editId: 'e1', subject: 'France', targetId: 10 },
    { editId: 'e2', subject: 'David  Stan ', targetId: 20 },
  ];
  test('a marked subject must equal an edited subject (white space normalised, case kept)', () => {
    assert.deepEqual(relatedEdits('The capital of France is', 'France', edited).map((e) => e.editId), ['e1']);
    assert.deepEqual(relatedEdits('David Stan was born in', ' David Stan', edited).map((e) => e.editId), ['e2']);
    assert.deepEqual(relatedEdits('The capital of france is', 'france', edited), []);
    // The subject of the prompt is another entity even though the text names France.
    assert.deepEqual(relatedEdits('Paris is located in the country of France', 'Paris', edited), []);
  });
  test('without a marked subject, the text must name an edited subject as whole words', () => {
    assert.deepEqual(relatedEdits('The birthplace of David Stan is', null, edited).map((e) => e.editId), ['e2']);
    assert.deepEqual(relatedEdits('The birthplace of David Stanley is', null, edited), []);
    assert.deepEqual(relatedEdits('Frances was born in', undefined, edited), []);
    assert.ok(namesSubject("France's capital is", 'France'));
    assert.ok(!namesSubject('NewFrance is', 'France'));
  });
  test('verdicts: unchanged, collateral, moved, not-reached; other facts of an edited subject should not move', () => {
    const e1 = [edited[0]];
    assert.deepEqual(classifyCheck([], 5, 5), { related: false, changed: false, verdict: 'unchanged' });
    assert.deepEqual(classifyCheck([], 5, 6), { related: false, changed: true, verdict: 'collateral' });
    assert.deepEqual(classifyCheck(e1, 5, 10), { related: true, changed: true, verdict: 'moved' });
    assert.deepEqual(classifyCheck(e1, 5, 7), { related: true, changed: true, verdict: 'not-reached' });
    assert.deepEqual(classifyCheck(e1, 5, 5), { related: true, changed: false, verdict: 'not-reached' });
    // Already the new target before: it is where the edit wants it.
    assert.deepEqual(classifyCheck(e1, 10, 10), { related: true, changed: false, verdict: 'moved' });
    // With the true object known (5), a prompt about France that answered something else asks
    // another fact of France: it should keep its answer.
    const withTrue = [{ ...edited[0], targetTrueId: 5 }];
    assert.deepEqual(classifyCheck(withTrue, 5, 10), { related: true, changed: true, verdict: 'moved' });
    assert.deepEqual(classifyCheck(withTrue, 5, 7), { related: true, changed: true, verdict: 'not-reached' });
    assert.deepEqual(classifyCheck(withTrue, 8, 8), { related: true, changed: false, verdict: 'unchanged' });
    assert.deepEqual(classifyCheck(withTrue, 8, 9), { related: true, changed: true, verdict: 'collateral' });
  });
  test('edit labels: subject → new target; a batch names its count', () => {
    const base = { id: 'x', method: 'memit' as const, layers: [1], deltas: [], info: {}, modelHash: '', createdAt: '' };
    assert.equal(summarizeEdit({ ...base, request: { prompt: '{} is in', subject: 'Paris', target: 'Japan' } }).label, 'Paris → Japan');
    const reqs = [
      { prompt: '{} is in', subject: 'Paris', target: 'Japan' },
      { prompt: '{} is in', subject: 'Rome', target: 'Chile' },
    ];
    assert.equal(summarizeEdit({ ...base, request: reqs[0], requests: reqs }).label, 'Paris → Japan (+1 more)');
  });
});

describe('check prompts of files', () => {
  test('.prompts: each prompt line with its subject; malformed lines are diagnostics', () => {
    const text = '# comment\nThe capital of [France] is => Paris\n\nno subject here\n[Paris] is in   # note\n';
    const r = checkFilePrompts(text, 'prompts');
    assert.deepEqual(r.prompts.map((p) => [p.line, p.prompt, p.subject]), [[1, 'The capital of France is', 'France'], [4, 'Paris is in', 'Paris']]);
    assert.equal(r.diagnostics.length, 1);
    assert.equal(r.diagnostics[0].line, 3);
  });
  test('CounterFact .json: rewrite, paraphrase and neighbourhood prompts at the lines of their strings', () => {
    const text = fs.readFileSync(CF_PATH, 'utf8');
    const lines = text.split('\n');
    const r = checkFilePrompts(text, 'json');
    const records = JSON.parse(text) as Array<{ paraphrase_prompts: string[]; neighborhood_prompts: string[] }>;
    const expected = records.reduce((n, rec) => n + 1 + rec.paraphrase_prompts.length + rec.neighborhood_prompts.length, 0);
    assert.equal(r.prompts.length, expected);
    for (const p of r.prompts.filter((q) => q.role !== 'rewrite').slice(0, 500)) {
      assert.ok(lines[p.line].includes(JSON.stringify(p.prompt)), `line ${p.line + 1} holds ${p.prompt}`);
    }
    const first = r.prompts.slice(0, 6);
    assert.deepEqual(first.map((p) => p.role), ['rewrite', 'paraphrase', 'paraphrase', 'neighborhood', 'neighborhood', 'neighborhood']);
    assert.equal(first[1].subject, 'David Stan');
    assert.equal(first[3].subject, null);
  });
  test('file kinds by extension', () => {
    assert.equal(checkFileKind('a/b.prompts'), 'prompts');
    assert.equal(checkFileKind('x.JSONL'), 'jsonl');
    assert.equal(checkFileKind('notes.md'), null);
  });
});

describe('checkSpecificity', () => {
  let m: LoadedModel;
  before(async () => {
    m = await sharedModel();
  });
  after(() => revertAllEdits(m));

  test('without edits: after = before, nothing changed, and the second call is all cached', () => {
    const cache = new BeforeCache();
    const prompts = realPrompts().slice(0, 30).map((prompt) => ({ prompt }));
    const r1 = checkSpecificity(m, prompts, { cache });
    assert.equal(r1.cachedBefore, 0);
    assert.equal(r1.edits.length, 0);
    assert.ok(r1.checks.every((c) => !c.changed && c.verdict === 'unchanged' && c.before.token === c.after.token));
    assert.equal(r1.unchanged, r1.others);
    const r2 = checkSpecificity(m, prompts, { cache });
    assert.equal(r2.cachedBefore, prompts.length);
    assert.deepEqual(r2.checks, r1.checks);
  });

  test('with an applied edit: before is the unedited answer, after the edited one, each classified', () => {
    const cache = new BeforeCache();
    const prompts = realPrompts().map((prompt) => ({ prompt, subject: null }));
    const base = predictBatch(m, prompts.map((p) => p.prompt), { k: 5 }).predictions;
    const rec = rankOneRecord(m, 0.5, 7, 'France', 'Japan');
    applyEdit(m, rec);
    try {
      const edited = predictBatch(m, prompts.map((p) => p.prompt), { k: 5 }).predictions;
      const unedited = predictBatch(m, prompts.map((p) => p.prompt), { k: 5, unedited: true }).predictions;
      const r = checkSpecificity(m, [{ prompt: 'The capital of France is', subject: 'France' }, ...prompts], { cache });
      assert.deepEqual(r.edits.map((e) => e.label), ['France → Japan']);
      const tail = r.checks.slice(1);
      tail.forEach((c, i) => {
        assert.equal(c.before.top[0].id, base[i].top[0].id);
        assert.equal(unedited[i].top[0].id, base[i].top[0].id);
        assert.equal(c.after.top[0].id, edited[i].top[0].id);
        assert.equal(c.changed, base[i].top[0].id !== edited[i].top[0].id);
        assert.equal(c.related, namesSubject(c.prompt, 'France'));
        if (!c.related) assert.equal(c.verdict, c.changed ? 'collateral' : 'unchanged');
      });
      const changed = tail.filter((c) => c.changed).length;
      assert.ok(changed > 0, 'this edit changes some answers');
      assert.equal(r.checks[0].related, true);
      const japan = targetTokenId(m, 'Japan');
      assert.equal(r.checks[0].verdict, r.checks[0].after.top[0].id === japan ? 'moved' : 'not-reached');
      // The record names no true target: every prompt about France asks the edited fact.
      assert.equal(r.others, r.checks.filter((c) => !c.related).length);
      assert.equal(r.unchanged, r.checks.filter((c) => !c.related && !c.changed).length);
      assert.deepEqual(listEdits(m).map((e) => e.id), [rec.id]);
      // Again with every state kept: the "after" pass starts at the edited layer (3) from the
      // unedited residual streams, and answers as the pass from the embedding does.
      const states = new StateCache();
      const cold = checkSpecificity(m, prompts, { cache: new BeforeCache(), states });
      const warm = checkSpecificity(m, prompts, { cache, states });
      const full = checkSpecificity(m, prompts, { cache, fullAfter: true });
      for (const r of [cold, warm]) {
        r.checks.forEach((c, i) => {
          assert.deepEqual(c.after.top.map((x) => x.id), full.checks[i].after.top.map((x) => x.id), c.prompt);
          c.after.top.forEach((x, j) => assert.ok(Math.abs(x.prob - full.checks[i].after.top[j].prob) < 1e-5, `${c.prompt} #${j}`));
        });
      }
    } finally {
      revertAllEdits(m);
    }
  });

  test('states are kept within their byte budget, least recently used dropped first', () => {
    const s = new StateCache(3 * 400);
    for (const p of ['a', 'b', 'c']) s.set('h', 3, p, new Float32Array(100));
    assert.ok(s.get('h', 3, 'a'));
    s.set('h', 3, 'd', new Float32Array(100));
    assert.equal(s.get('h', 3, 'b'), undefined, 'b was the least recently used');
    assert.ok(s.get('h', 3, 'a') && s.get('h', 3, 'c') && s.get('h', 3, 'd'));
    assert.equal(s.get('h', 2, 'a'), undefined, 'states are per layer');
  });
});

describe('over the engine protocol', () => {
  let client: EngineClient;
  before(async () => {
    ({ client } = await spawnClient({ requestTimeoutMs: 240_000 }));
    await client.request(ModelLoad, {});
  });
  after(async () => {
    await client?.stop();
  });

  test('predict/batch and specificity/check answer; bad params name the field', async () => {
    const prompts = ['The capital of France is', 'The capital of Japan is', 'Paris is located in the country of'];
    const r = await client.request(PredictBatch, { prompts, k: 3, targets: ['Tokyo'] });
    assert.equal(r.predictions.length, 3);
    assert.equal(r.predictions[0].top[0].token, ' Paris');
    assert.equal(r.predictions[1].targets[0].token, ' Tokyo');
    const c = await client.request(SpecificityCheckRequest, { prompts: prompts.map((prompt) => ({ prompt, subject: null })) });
    assert.equal(c.total, 3);
    assert.equal(c.unchanged, 3);
    assert.deepEqual(c.checks.map((x) => x.before.token), [' Paris', ' Tokyo', ' France']);
    const again = await client.request(SpecificityCheckRequest, { prompts: prompts.map((prompt) => ({ prompt })) });
    assert.equal(again.cachedBefore, 3);
    await assert.rejects(client.request(PredictBatch, { prompts: [] }), (e: Error & { data?: { field?: string } }) => /prompts/.test(String(e.data?.field)));
    await assert.rejects(
      client.request(SpecificityCheckRequest, { prompts: [{ prompt: 'x', subject: 3 as unknown as string }] }),
      (e: Error & { data?: { field?: string } }) => e.data?.field === 'prompts[0].subject',
    );
  });
});

describe('eval/run and factlens eval: one evaluation', () => {
  let client: EngineClient;
  before(async () => {
    ({ client } = await spawnClient({ requestTimeoutMs: 240_000 }));
    await client.request(ModelLoad, {});
  });
  after(async () => {
    await client?.stop();
  });

  test('dataset mode: the engine answers what the CLI prints', async () => {
    const file = path.join(SAMPLES, 'counterfact.json');
    const server = await client.request(EvalRun, { dataset: file, method: 'none' });
    const out: string[] = [];
    const { main } = await import('../engine/cli/main.js');
    const code = await main(['eval', '--dataset', file, '--method', 'none', '--json', ...(process.env.FACTLENS_TEST_BACKEND ? ['--backend', process.env.FACTLENS_TEST_BACKEND] : [])], {
      stdout: { write: (x: string) => out.push(x) },
      stderr: { write: () => {} },
      env: process.env,
    });
    assert.equal(code, 0);
    const cli = JSON.parse(out.join(''));
    assert.equal(server.mode, 'dataset');
    assert.deepEqual(server, cli);
  });

  test('applied-edits mode: ES before/after of the applied edit, the same numbers in process', async () => {
    const m = await sharedModel();
    const rec = rankOneRecord(m, 0.5, 7, 'David Stan', 'Nairobi');
    rec.request = { prompt: '{} was born in', subject: 'David Stan', target: 'Nairobi', targetTrue: 'Salvador' };
    await client.request(EditApply, { record: rec });
    try {
      const dataset = path.join(SAMPLES, 'counterfact.json');
      const r = await client.request(EvalRun, { edits: [], dataset });
      assert.equal(r.mode, 'applied');
      assert.equal(r.n, 1);
      assert.deepEqual((r.edits as Array<{ label: string }>).map((e) => e.label), ['David Stan → Nairobi']);
      // The sample's record for David Stan → Nairobi lends its paraphrases and neighbours.
      assert.deepEqual(r.counts, { records: 1, paraphrase: 1, neighborhood: 1, generation: 0 });
      applyEdit(m, rec);
      try {
        const local = evaluationSummary(await runEvaluation(m, { edits: [], dataset }), m, 'rome');
        assert.deepEqual(r, local);
      } finally {
        revertAllEdits(m);
      }
      await assert.rejects(client.request(EvalRun, { edits: ['nope'] }), (e: Error & { data?: { field?: string } }) => e.data?.field === 'edits');
    } finally {
      await client.request(EditRevert, { id: rec.id });
    }
    await assert.rejects(client.request(EvalRun, {}), (e: Error & { data?: { field?: string } }) => e.data?.field === 'dataset');
  });
});

describe('factlens edit --check-file (the built CLI)', () => {
  const BIN = path.join(ROOT, 'bin', 'factlens.js');
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-spec-cli-'));
  const backend = process.env.FACTLENS_TEST_BACKEND ? ['--backend', process.env.FACTLENS_TEST_BACKEND] : [];
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, FACTLENS_CACHE_DIR: cache }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  const EDIT = ['edit', '--prompt', 'The capital of {} is', '--subject', 'France', '--target', 'Japan', '--layer', '3', '--stats-samples', '1000', '--tokens', '0'];
  const FILES = [path.join('samples', 'capitals.prompts'), path.join('samples', 'counterfact.json')];
  before(async () => {
    // Only the slow tier runs these (a real ROME edit each); build the CLI for them.
    if (SLOW) await promisify(execFile)(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs'), '--only', 'engine cli'], { cwd: ROOT });
  });
  after(() => fs.rmSync(cache, { recursive: true, force: true }));

  slowTest('--json: checks rows for every prompt of a .prompts and a CounterFact file', async () => {
    const r = await run([...EDIT, ...FILES.flatMap((f) => ['--check-file', f]), '--json', ...backend]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    const expected = FILES.flatMap((f) => {
      const kind = checkFileKind(f)!;
      return checkFilePrompts(fs.readFileSync(path.join(ROOT, f), 'utf8'), kind).prompts.map((p) => ({ f, p }));
    });
    assert.equal(out.checks.length, expected.length);
    out.checks.forEach((c: Record<string, any>, i: number) => {
      assert.deepEqual(Object.keys(c), ['file', 'line', 'prompt', 'subject', 'related', 'before', 'after', 'changed']);
      assert.equal(c.file, expected[i].f);
      assert.equal(c.line, expected[i].p.line + 1);
      assert.equal(c.prompt, expected[i].p.prompt);
      assert.deepEqual(Object.keys(c.before), ['token', 'prob']);
      assert.equal(c.changed, c.before.token !== c.after.token);
      assert.equal(c.related, c.subject === 'France');
    });
    const france = out.checks.find((c: Record<string, any>) => c.prompt === 'The capital of France is');
    assert.equal(france.before.token, ' Paris');
    assert.equal(france.changed, true, 'the edit moves its own prompt');
    // The edit's own prompt in the result agrees with the check of the same prompt.
    assert.equal(out.prompts[0].after.top.token, france.after.token);
  });

  slowTest('without --json: a table with file:line; bad check files are clear errors', async () => {
    const r = await run([...EDIT, '--check-file', FILES[0], ...backend]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /specificity: \d+\/\d+ other prompts unchanged/);
    assert.match(r.stdout, /samples\/capitals\.prompts:5 +"The capital of France is" +" Paris" 99\.9%/);
    const missing = await run([...EDIT, '--check-file', 'samples/nope.prompts']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /check file samples\/nope\.prompts does not exist/);
    const wrong = await run([...EDIT, '--check-file', 'samples/notes.md']);
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /expected a \.prompts, \.json or \.jsonl file/);
  });
});
