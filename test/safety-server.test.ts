/**
 * The engine process keeps reads consistent and its request loop free (issue #13, items 2
 * and 7): the real engine driven over its protocol by the real client.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EngineClient, EngineError } from '../engine/client/index.js';
import { EvalRun, JobsList, ModelLoad, Predict } from '../engine/protocol.js';
import { LogBuffer, ROOT, spawnClient } from './helpers/engine-process.js';

const TINY = path.join(ROOT, 'engine', 'assets', 'tinyworld');
let client: EngineClient;
let log: LogBuffer;
let work: string;

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-safety-server-'));
  ({ client, log } = await spawnClient({ env: { ...process.env, FACTLENS_CACHE_DIR: path.join(work, 'cache') } }));
  await client.request(ModelLoad, {});
});
after(async () => {
  await client?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('item 2: a job that changes weights is exclusive', () => {
  test('predicts sent during an evaluation batch all answer from the unedited model', async () => {
    const records = JSON.parse(fs.readFileSync(path.join(ROOT, 'samples', 'counterfact.json'), 'utf8')) as Array<{
      requested_rewrite: { prompt: string; subject: string; target_new: { str: string } };
    }>;
    const dataset = path.join(work, 'cf.json');
    fs.writeFileSync(dataset, JSON.stringify(records));
    const prompts = records.map((r) => r.requested_rewrite.prompt.replace('{}', r.requested_rewrite.subject));
    const baseline = await Promise.all(prompts.map((prompt) => client.request(Predict, { prompt, k: 1 })));

    // FT (the quickest method) with all records in one batch: each edit stays applied while the
    // next is computed and the batch is measured, then all are reverted.
    const evaluation = client.request(EvalRun, { dataset, method: 'ft', layer: 3, batch: records.length });
    const answers: Array<{ i: number; token: string; started: number }> = [];
    let running = true;
    void evaluation.finally(() => (running = false));
    const t0 = Date.now();
    let n = 0;
    while (running) {
      const i = n++ % prompts.length;
      const started = Date.now() - t0;
      const p = await client.request(Predict, { prompt: prompts[i], k: 1 });
      answers.push({ i, token: p.top[0].token, started });
      await new Promise((r) => setTimeout(r, 30));
    }
    const result = await evaluation;
    assert.equal(result.n, records.length);
    // The edits did land during the evaluation (so a leak would have been visible)...
    const post = (result as { post: { ES: number } }).post;
    assert.ok(post.ES > 50, `post ES ${post.ES}`);
    // ...and no predict saw one of them.
    const leaked = answers.filter((a) => a.token !== baseline[a.i].top[0].token);
    assert.ok(answers.length >= 1);
    assert.deepEqual(leaked, [], `${leaked.length} of ${answers.length} predicts answered from an edited model`);
    // After it, the model is the unedited one.
    for (let i = 0; i < prompts.length; i++) {
      assert.equal((await client.request(Predict, { prompt: prompts[i], k: 1 })).top[0].token, baseline[i].top[0].token);
    }
  });
});

describe('item 7: a FIFO in a model folder does not freeze the engine', () => {
  test('model/load of a folder whose model.safetensors is a FIFO fails at once; jobs/list answers meanwhile', async () => {
    const dir = path.join(work, 'fifo-model');
    fs.mkdirSync(dir);
    for (const f of fs.readdirSync(TINY)) if (f !== 'model.safetensors') fs.symlinkSync(path.join(TINY, f), path.join(dir, f));
    execFileSync('mkfifo', [path.join(dir, 'model.safetensors')]);
    const load = client.request(ModelLoad, { dir }, { timeoutMs: 30_000 }).then(
      () => assert.fail('loaded a FIFO'),
      (e: unknown) => e,
    );
    const jobs = await client.request(JobsList, {}, { timeoutMs: 10_000 });
    assert.ok(Array.isArray(jobs.jobs));
    const e = (await load) as EngineError;
    assert.ok(e instanceof EngineError, String(e));
    assert.equal(e.kind, 'FILE_MISSING', e.message);
    assert.match(e.message, /model\.safetensors is a FIFO \(named pipe\), not a regular file/);
    // The engine still serves, with the model it had.
    assert.equal((await client.request(Predict, { prompt: 'The capital of France is', k: 1 })).top[0].token, ' Paris');
    void log;
  });
});
