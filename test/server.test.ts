/**
 * The engine process over stdio, through the client library: a round trip for every method
 * on the embedded model, structured errors, the job queue (predict jumps it, queued jobs can
 * be cancelled), cancellation of a running trace, timeouts. Every test talks to a real
 * spawned engine process.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CancellationTokenSource, RequestType } from 'vscode-jsonrpc';
import { EngineClient, EngineError } from '../engine/client/index.js';
import {
  EditApply,
  EditList,
  EditRevert,
  ERROR_CODES,
  EvalRun,
  JobsList,
  METHODS,
  ModelInfoRequest,
  ModelLoad,
  Predict,
  PROTOCOL_VERSION,
  StatsCompute,
  Trace,
  TraceAverage,
  type ProgressParams,
} from '../engine/protocol.js';
import { LogBuffer, spawnClient, until } from './helpers/engine-process.js';
import { TINYWORLD } from './helpers/golden.js';
import { slowTest } from './helpers/tier.js';

const PROMPT = 'The capital of France is';
/** A quick trace: two corrupted rows, hidden states only. */
const QUICK = { prompt: PROMPT, subject: 'France', samples: 2, kinds: ['hidden' as const] };
/**
 * A trace of some seconds (about 7 s on a 2-core machine), with checkpoints every few hundred
 * ms. Sized so that cancelling it at a quarter of the way cannot race its end: the native path
 * runs a 10-sample trace of this prompt in a fraction of a second.
 */
const LONG = { prompt: 'The official language of France is', subject: 'France', samples: 200 };
/** The most samples a trace takes (tens of seconds): every test that uses it cancels it. */
const LONGER = { prompt: 'The official language of France is', subject: 'France', samples: 1000 };

async function rejects(p: Promise<unknown>, kind: string, check?: (e: EngineError) => void): Promise<EngineError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof EngineError, `expected an EngineError, got ${e}`);
    assert.equal(e.kind, kind, `expected ${kind}, got ${e.kind}: ${e.message}`);
    assert.equal(e.code, ERROR_CODES[kind as keyof typeof ERROR_CODES], `JSON-RPC code of ${kind}`);
    assert.equal(e.data?.code, kind, 'error.data.code carries the symbolic code');
    assert.ok(e.message.length > 10, 'a message a person can act on');
    check?.(e);
    return e;
  }
  assert.fail(`expected ${kind}, but the request succeeded`);
}

let client: EngineClient;
let log: LogBuffer;

before(async () => {
  ({ client, log } = await spawnClient({ requestTimeoutMs: 240_000 }));
});

after(async () => {
  await client?.stop();
});

describe('engine over stdio: handshake and model', () => {
  test('initialize reports versions, backend and capabilities', () => {
    const info = client.info!;
    assert.equal(info.protocolVersion, PROTOCOL_VERSION);
    assert.match(info.engineVersion, /^\d+\.\d+\.\d+/);
    assert.ok(info.pid > 0 && info.pid !== process.pid);
    assert.deepEqual(info.capabilities.methods, [...METHODS]);
    for (const m of ['initialize', 'model/load', 'model/info', 'predict', 'trace', 'traceAverage', 'edit/apply', 'edit/revert', 'edit/list', 'eval/run', 'stats/compute', 'jobs/list', 'shutdown']) {
      assert.ok(info.capabilities.methods.includes(m), m);
    }
    assert.deepEqual(info.capabilities.unavailable, {}, 'every declared method is available');
    assert.ok(info.backend.available.some((b) => b.name === 'cpu' && b.available));
    assert.equal(info.connection.transport, 'stdio');
    assert.equal(info.model, null);
  });

  test('before model/load: model/info is null and predict is NO_MODEL', async () => {
    assert.equal(await client.request(ModelInfoRequest, {}), null);
    await rejects(client.request(Predict, { prompt: PROMPT }), 'NO_MODEL', (e) => assert.equal(e.data?.field, 'model'));
  });

  test('model/load of a missing folder: MODEL_NOT_FOUND naming the folder', async () => {
    await rejects(client.request(ModelLoad, { dir: '/nonexistent/model' }), 'MODEL_NOT_FOUND', (e) =>
      assert.equal(e.data?.file, '/nonexistent/model'),
    );
  });

  test('model/load loads the embedded model, model/info describes it', async () => {
    const progress: number[] = [];
    const info = await client.request(ModelLoad, {}, { onProgress: (f) => progress.push(f) });
    assert.equal(info.name, 'tinyworld');
    assert.equal(info.nLayer, 8);
    assert.equal(info.nCtx, 128);
    assert.deepEqual(info.edits, []);
    assert.ok(progress.includes(1), `progress reached 1: ${progress}`);
    const again = await client.request(ModelInfoRequest, {});
    assert.equal(again?.dir, info.dir);
    assert.equal(again?.backend, info.backend);
  });
});

describe('engine over stdio: round trips', () => {
  test('predict: Paris after "The capital of France is"', async () => {
    const r = await client.request(Predict, { prompt: PROMPT, k: 3 });
    assert.equal(r.model, 'tinyworld');
    assert.equal(r.top.length, 3);
    assert.equal(r.top[0].token, ' Paris');
    assert.ok(r.top[0].prob > 0.5);
  });

  test('trace: scores grid and progress notifications for this request only', async () => {
    const seen: ProgressParams[] = [];
    const r = await client.request(Trace, QUICK, { onProgress: (_f, _m, p) => seen.push(p) });
    assert.equal(r.answer.token, ' Paris');
    assert.equal(r.samples, 2);
    assert.deepEqual(r.kinds, ['hidden']);
    assert.equal(r.scores.hidden!.length, r.tokens.length);
    assert.equal(r.scores.hidden![0].length, 8);
    assert.ok(seen.length >= 2, 'progress arrived');
    assert.ok(seen.every((p) => p.method === 'trace' && p.jobId === seen[0].jobId), 'one job, one id');
    assert.ok(seen.every((p, i) => i === 0 || p.fraction >= seen[i - 1].fraction), 'fractions never go back');
    assert.equal(seen.at(-1)!.fraction, 1);
  });

  test('traceAverage over inline facts', async () => {
    const r = await client.request(TraceAverage, {
      facts: [
        { subject: 'France', prompt: 'The capital of {} is', object: 'Paris' },
        { subject: 'Germany', prompt: 'The capital of {} is', object: 'Berlin' },
      ],
      samples: 2,
      kinds: ['hidden'],
    });
    assert.equal(r.facts_considered, 2);
    assert.ok(r.facts_traced >= 1, JSON.stringify(r.facts_skipped));
    assert.equal(r.aie.hidden!.length, 6);
  });

  test('traceAverage of a missing facts file: FILE_MISSING naming it', async () => {
    await rejects(client.request(TraceAverage, { factsFile: '/nonexistent/facts.jsonl', limit: 1 }), 'FILE_MISSING', (e) =>
      assert.equal(e.data?.file, '/nonexistent/facts.jsonl'),
    );
  });

  test('jobs/list while a trace runs: the job, its owner, running', async () => {
    const running = client.request(Trace, QUICK);
    let jobs: Awaited<ReturnType<typeof listJobs>> = [];
    await until(async () => (jobs = await listJobs()).length > 0, 60_000, 'the trace to show in jobs/list');
    assert.equal(jobs[0].method, 'trace');
    assert.equal(jobs[0].state, 'running');
    assert.equal(jobs[0].mine, true);
    assert.equal(jobs[0].owner.client, 'test');
    assert.equal(jobs[0].summary, PROMPT);
    await running;
    assert.deepEqual(await listJobs(), []);
  });

  test('edit/apply, edit/list, edit/revert (or NOT_AVAILABLE where editing is not in this build)', async () => {
    const unavailable = client.info!.capabilities.unavailable;
    if (unavailable['edit/apply']) {
      for (const p of [
        client.request(EditApply, { request: { prompt: 'The capital of {} is', subject: 'France', target: 'Rome' } }),
        client.request(EditList, {}),
        client.request(EditRevert, { id: 'e1' }),
      ]) {
        await rejects(p, 'NOT_AVAILABLE', (e) => assert.match(e.message, /not available in this engine build/));
      }
      return;
    }
    const before = await client.request(Predict, { prompt: PROMPT, k: 1 });
    const progress: number[] = [];
    const rec = await client.request(
      EditApply,
      {
        request: { prompt: 'The capital of {} is', subject: 'France', target: 'Rome', layers: [2] },
        options: { statsSamples: 200 },
      },
      { onProgress: (f) => progress.push(f) },
    );
    assert.ok(rec.id && rec.deltas.length > 0);
    assert.deepEqual(rec.layers, [2]);
    assert.ok(progress.length > 2 && progress.at(-1) === 1, `edit progress: ${progress}`);
    assert.deepEqual((await client.request(EditList, {})).map((r) => r.id), [rec.id]);
    assert.equal((await client.request(Predict, { prompt: PROMPT, k: 1 })).top[0].token, ' Rome');
    const rev = await client.request(EditRevert, { id: rec.id });
    assert.deepEqual(rev, { reverted: rec.id, remaining: [] });
    assert.deepEqual(await client.request(Predict, { prompt: PROMPT, k: 1 }), before);
    // The precomputed record applies again without recomputation, and reverts.
    const again = await client.request(EditApply, { record: rec });
    assert.equal(again.id, rec.id);
    assert.equal((await client.request(Predict, { prompt: PROMPT, k: 1 })).top[0].token, ' Rome');
    await client.request(EditRevert, { id: rec.id });
    assert.deepEqual(await client.request(EditList, {}), []);
  });

  test('edit/apply with method memit; a batch record (with its requests) re-applies over the protocol', async () => {
    if (client.info!.capabilities.unavailable['edit/apply']) return;
    const rec = await client.request(EditApply, {
      request: { prompt: 'The capital of {} is', subject: 'France', target: 'Rome', method: 'memit', layers: [2, 3] },
      options: { statsSamples: 200 },
    });
    assert.equal(rec.method, 'memit');
    assert.deepEqual(rec.layers, [2, 3]);
    assert.deepEqual(rec.deltas.map((d) => [d.kind, d.layer]), [['dense', 2], ['dense', 3]]);
    await client.request(EditRevert, { id: rec.id });
    // A MEMIT batch record lists every request it carries; the journal re-applies such records.
    const batch = { ...rec, id: `${rec.id}-batch`, requests: [rec.request, { ...rec.request, subject: 'Germany' }] };
    assert.equal((await client.request(EditApply, { record: batch })).id, batch.id);
    assert.deepEqual((await client.request(EditList, {})).map((r) => r.requests?.length), [2]);
    await client.request(EditRevert, { id: batch.id });
  });

  test('stats/compute (or NOT_AVAILABLE where statistics are not in this build)', async () => {
    if (client.info!.capabilities.unavailable['stats/compute']) {
      await rejects(client.request(StatsCompute, { layers: [1] }), 'NOT_AVAILABLE');
      return;
    }
    const r = await client.request(StatsCompute, { layers: [1], samples: 20, cache: false });
    assert.equal(r.layers.length, 1);
    assert.equal(r.layers[0].layer, 1);
    assert.equal(r.layers[0].documents, 20);
    assert.equal(r.layers[0].f, 1024);
    assert.ok(r.layers[0].count > 20, 'tokens summed');
    assert.ok(!('sum' in r.layers[0]), 'the f×f matrix stays in the engine');
  });

  test('eval/run: CounterFact metrics of the unedited model on a dataset file; a missing dataset is named', async () => {
    const records = JSON.parse(fs.readFileSync(path.join(TINYWORLD, 'counterfact-dev.json'), 'utf8'));
    const file = path.join(os.tmpdir(), `factlens-eval-${process.pid}.json`);
    fs.writeFileSync(file, JSON.stringify(records.slice(0, 2)));
    try {
      const r = (await client.request(EvalRun, { dataset: file, method: 'none', limit: 2 })) as Record<string, any>;
      assert.equal(r.n, 2);
      for (const k of ['ES', 'PS', 'NS', 'EM', 'PM', 'NM', 'S', 'GE']) assert.equal(typeof r.pre[k], 'number', k);
      assert.equal(r.method, 'none');
    } finally {
      fs.rmSync(file, { force: true });
    }
    await rejects(client.request(EvalRun, { method: 'none' }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data?.field, 'dataset'));
    await rejects(client.request(EvalRun, { dataset: '/nonexistent/cf.json' }), 'FILE_MISSING');
    await rejects(client.request(EvalRun, { dataset: file, sequential: 'yes' as unknown as boolean }), 'INVALID_ARGUMENT', (e) =>
      assert.equal(e.data?.field, 'sequential'),
    );
    await rejects(client.request(EvalRun, { dataset: file, formula: 'best' as never }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data?.field, 'formula'));
  });

  slowTest('eval/run sequential with the null-space projection: stacked edits, retention, per-record verdicts; weights restored', async () => {
    const records = JSON.parse(fs.readFileSync(path.join(TINYWORLD, 'counterfact-dev.json'), 'utf8'));
    const file = path.join(os.tmpdir(), `factlens-eval-seq-${process.pid}.json`);
    fs.writeFileSync(file, JSON.stringify(records.slice(0, 2)));
    // The slow tier runs this test alone: load the model unless an earlier test did.
    if ((await client.request(ModelInfoRequest, {})) === null) await client.request(ModelLoad, {});
    try {
      const before = (await client.request(Predict, { prompt: 'The capital of France is' })) as { top: Array<{ prob: number }> };
      const r = (await client.request(EvalRun, { dataset: file, method: 'rome', limit: 2, sequential: true, nullSpace: true, perRecord: true })) as Record<string, any>;
      assert.equal(r.sequential, true);
      assert.equal(r.n, 2);
      assert.equal(r.retention.facts, 1000);
      assert.ok(r.retention.before > 50 && r.retention.after >= 0, JSON.stringify(r.retention));
      assert.equal(r.per_record.length, 2);
      for (const row of r.per_record) assert.equal(typeof row.took, 'boolean', JSON.stringify(Object.keys(row)));
      const after = (await client.request(Predict, { prompt: 'The capital of France is' })) as { top: Array<{ prob: number }> };
      assert.equal(after.top[0].prob, before.top[0].prob, 'every stacked edit was reverted');
    } finally {
      fs.rmSync(file, { force: true });
    }
  });
});

async function listJobs() {
  return (await client.request(JobsList, {})).jobs;
}

describe('engine over stdio: structured errors, and the engine stays up', () => {
  test('unknown method: METHOD_NOT_FOUND listing the methods', async () => {
    await rejects(client.request(new RequestType<object, unknown, unknown>('model/explode'), {}), 'METHOD_NOT_FOUND', (e) =>
      assert.match(e.message, /model\/explode.*initialize, model\/load/),
    );
  });

  test('wrong parameter types: INVALID_ARGUMENT naming the field', async () => {
    const cases: Array<[RequestType<any, any, any>, unknown, string]> = [
      [Predict, { prompt: 42 }, 'prompt'],
      [Predict, { prompt: PROMPT, k: 'ten' }, 'k'],
      [Predict, { prompt: PROMPT, k: 0 }, 'k'],
      [Predict, {}, 'prompt'],
      [Trace, { prompt: PROMPT, subject: 'France', samples: 2.5 }, 'samples'],
      [Trace, { prompt: PROMPT, subject: 'France', kinds: ['hidden', 'brain'] }, 'kinds[1]'],
      [Trace, { prompt: PROMPT, subject: 'France', subjectRange: [0] }, 'subjectRange'],
      [Trace, { prompt: PROMPT, subjet: 'France' }, 'subjet'],
      [TraceAverage, { facts: [{ subject: 'France', prompt: 'x' }] }, 'facts[0].object'],
      [ModelLoad, { backend: 'tpu' }, 'backend'],
      [EditApply, { request: { prompt: 'The capital of {} is', subject: 'France', target: 7 } }, 'request.target'],
      [EditApply, { record: { id: 'x' } }, 'record.request'],
      [JobsList, { all: true }, 'all'],
    ];
    for (const [type, params, field] of cases) {
      await rejects(client.request(type, params), 'INVALID_ARGUMENT', (e) => {
        assert.equal(e.code, -32602);
        assert.equal(e.data?.field, field, `${type.method} ${JSON.stringify(params)}: ${e.message}`);
      });
    }
  });

  test('a prompt longer than the context: PROMPT_TOO_LONG with the token count and the limit', async () => {
    const long = 'The capital of France is Paris. '.repeat(40);
    await rejects(client.request(Predict, { prompt: long }), 'PROMPT_TOO_LONG', (e) => {
      assert.equal(e.data?.field, 'prompt');
      assert.equal(e.data?.limit, 128);
      assert.ok((e.data?.tokens as number) > 128);
    });
    await rejects(client.request(Trace, { prompt: long, subject: 'France' }), 'PROMPT_TOO_LONG');
  });

  test('a subject that is not in the prompt: SUBJECT_NOT_FOUND', async () => {
    await rejects(client.request(Trace, { prompt: PROMPT, subject: 'Spain' }), 'SUBJECT_NOT_FOUND', (e) =>
      assert.equal(e.data?.field, 'subject'),
    );
  });

  test('after all that, the engine still answers', async () => {
    assert.equal((await client.request(Predict, { prompt: PROMPT, k: 1 })).top[0].token, ' Paris');
    assert.equal(client.state, 'ready');
  });
});

describe('engine over stdio: queue, cancellation, timeouts', () => {
  test('a trace cancelled midway returns a cancellation error; the next request succeeds', async () => {
    const cts = new CancellationTokenSource();
    let cancelledAt = 0;
    let lastProgress = 0;
    const p = client.request(Trace, LONG, {
      token: cts.token,
      onProgress: (f) => {
        lastProgress = f;
        if (f >= 0.25 && !cancelledAt) {
          cancelledAt = Date.now();
          cts.cancel();
        }
      },
    });
    const e = await rejects(p, 'CANCELLED');
    const latency = Date.now() - cancelledAt;
    assert.ok(cancelledAt > 0, 'cancelled after the job made progress');
    assert.ok(lastProgress < 1, 'the trace had not finished');
    assert.equal(e.code, -32800);
    process.stderr.write(`# cancellation latency: ${latency} ms (cancelled at ${(lastProgress * 100).toFixed(1)}%)\n`);
    assert.ok(latency < 2500, `cancelled within about a second (took ${latency} ms)`);
    assert.deepEqual(await listJobs(), [], 'the queue is empty');
    assert.equal((await client.request(Predict, { prompt: PROMPT, k: 1 })).top[0].token, ' Paris');
    const t = await client.request(Trace, QUICK);
    assert.equal(t.answer.token, ' Paris');
  });

  test('jobs run one at a time; a queued job is cancelled before it starts; predict jumps the queue', async () => {
    const ctsA = new CancellationTokenSource();
    const ctsB = new CancellationTokenSource();
    const order: string[] = [];
    const a = client.request(Trace, LONGER, { token: ctsA.token }).then(
      () => order.push('A done'),
      (e: EngineError) => order.push(`A ${e.kind}`),
    );
    await until(async () => (await listJobs()).some((j) => j.state === 'running'), 60_000, 'trace A to start');
    const b = client.request(Trace, QUICK, { token: ctsB.token }).then(
      () => order.push('B done'),
      (e: EngineError) => order.push(`B ${e.kind}`),
    );
    const c = client.request(Trace, QUICK).then(
      () => order.push('C done'),
      (e: EngineError) => order.push(`C ${e.kind}`),
    );
    let jobs: Awaited<ReturnType<typeof listJobs>> = [];
    await until(async () => (jobs = await listJobs()).length === 3, 30_000, 'three jobs in the queue');
    assert.deepEqual(
      jobs.map((j) => [j.state, j.position]),
      [
        ['running', 0],
        ['queued', 1],
        ['queued', 2],
      ],
    );
    // predict does not wait behind the running trace and the queue.
    const pr = await client.request(Predict, { prompt: PROMPT, k: 1 });
    order.push('predict done');
    assert.equal(pr.top[0].token, ' Paris');
    ctsB.cancel();
    await b;
    assert.deepEqual((await listJobs()).map((j) => j.state), ['running', 'queued'], 'B left the queue, A still runs');
    ctsA.cancel();
    await a;
    await c;
    assert.deepEqual(order, ['predict done', 'B CANCELLED', 'A CANCELLED', 'C done']);
  });

  test('a request timeout rejects with TIMEOUT and cancels the job in the engine', async () => {
    // A 1000-sample trace takes tens of seconds; 200 ms cannot be enough on any machine.
    await rejects(client.request(Trace, LONGER, { timeoutMs: 200 }), 'TIMEOUT');
    await until(async () => (await listJobs()).length === 0, 120_000, 'the timed-out trace to be cancelled');
    assert.match(log.text, /cancel requested/);
  });
});

describe('handshake errors', () => {
  test('a client with another protocol major version gets VERSION_MISMATCH and no restarts', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-'));
    try {
      await assert.rejects(spawnClient({ protocolVersion: '2.0', journalPath: path.join(dir, 'j.json') }), (e: EngineError) => {
        assert.equal(e.kind, 'VERSION_MISMATCH');
        assert.equal(e.data?.field, 'protocolVersion');
        assert.match(e.message, /protocol 2\.0.*speaks 1\.\d/);
        return true;
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
