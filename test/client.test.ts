/**
 * The client library against real engine processes: `kill -9` during a job, restart with
 * exponential backoff, the model reloaded and the edit journal re-applied so predictions
 * equal those before the kill; the journal persisted to a file and re-applied by a new
 * client; giving up after too many crashes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EngineError, type EngineClient, type StateEvent } from '../engine/client/index.js';
import { EditApply, EditList, EditRevert, ModelInfoRequest, ModelLoad, Predict, Trace, type EditApplyParams } from '../engine/protocol.js';
import type { Prediction } from '../engine/predict.js';
import { spawn } from 'node:child_process';
import { engineCommand, ROOT, spawnClient, until, type LogBuffer } from './helpers/engine-process.js';

const PROMPTS = ['The capital of France is', 'The capital of Germany is', 'The official language of France is', 'The capital of Italy is'];
/** The most samples a trace takes: it must still run when kill -9 arrives. */
const LONG = { prompt: 'The official language of France is', subject: 'France', samples: 1000 };
/** Three edits (ROME at layer 2, small statistics, 10 v* steps: quick, and enough to change predictions). */
const EDITS: EditApplyParams[] = [
  { request: { prompt: 'The capital of {} is', subject: 'France', target: 'Rome', layers: [2] }, options: { statsSamples: 200, hparams: { vNumGradSteps: 10 } } },
  { request: { prompt: 'The capital of {} is', subject: 'Germany', target: 'Madrid', layers: [2] }, options: { statsSamples: 200, hparams: { vNumGradSteps: 10 } } },
  { request: { prompt: 'The official language of {} is', subject: 'France', target: 'German', layers: [2] }, options: { statsSamples: 200, hparams: { vNumGradSteps: 10 } } },
];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-client-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function predictions(c: EngineClient): Promise<Prediction[]> {
  const out: Prediction[] = [];
  for (const prompt of PROMPTS) out.push(await c.request(Predict, { prompt, k: 5 }));
  return out;
}

function recordStates(c: EngineClient): StateEvent[] {
  const states: StateEvent[] = [];
  c.on('state', (s) => states.push(s));
  return states;
}

/** kill -9 while a long trace runs; the trace fails with ENGINE_EXITED; resolves when ready again. */
async function killDuringJob(c: EngineClient, states: StateEvent[]): Promise<void> {
  const pid = c.pid!;
  let started = false;
  const job = c.request(Trace, LONG, { onProgress: () => (started = true) }).then(
    () => assert.fail('the trace should not survive kill -9'),
    (e: EngineError) => e,
  );
  await until(() => started, 120_000, 'the trace to start');
  process.kill(pid, 'SIGKILL');
  const e = await job;
  assert.ok(e instanceof EngineError);
  assert.equal(e.kind, 'ENGINE_EXITED');
  assert.match(e.message, /SIGKILL.*trace/);
  const from = states.length;
  await until(() => states.slice(from).some((s) => s.state === 'ready') || c.state === 'ready', 240_000, 'the engine to be ready again');
  assert.notEqual(c.pid, pid, 'a new engine process');
}

describe('client: restart after kill -9', () => {
  let client: EngineClient;
  let log: LogBuffer;
  let states: StateEvent[];
  const journalPath = path.join(tmp, 'journal.json');

  before(async () => {
    ({ client, log } = await spawnClient({
      journalPath,
      requestTimeoutMs: 300_000,
      restart: { initialDelayMs: 200, maxDelayMs: 2000, maxAttempts: 5 },
    }));
    states = recordStates(client);
    await client.request(ModelLoad, {});
  });

  after(async () => {
    await client?.stop();
  });

  test('the client restarts the engine with backoff and reloads the model; predictions equal those before', async () => {
    const before = await predictions(client);
    await killDuringJob(client, states);
    const seq = states.map((s) => s.state);
    assert.deepEqual(seq.slice(0, 4), ['crashed', 'restarting', 'starting', 'ready'], JSON.stringify(states));
    assert.match(states[0].reason!, /SIGKILL/);
    assert.deepEqual([states[1].attempt, states[1].delayMs], [1, 200]);
    assert.notEqual(await client.request(ModelInfoRequest, {}), null, 'the model was loaded again');
    assert.deepEqual(await predictions(client), before);
    assert.match(log.text, /re-loading model/);
  });

  test('kill -9 during a job after three edits: the journal re-applies them; predictions equal those before the kill', async (t) => {
    if (client.info!.capabilities.unavailable['edit/apply']) {
      t.skip('editing is not in this engine build (pending: engine/edit)');
      return;
    }
    const unedited = await predictions(client);
    const ids: string[] = [];
    for (const e of EDITS) ids.push((await client.request(EditApply, e)).id);
    assert.deepEqual((await client.request(EditList, {})).map((r) => r.id), ids);
    assert.deepEqual(client.journal.edits.map((r) => r.id), ids, 'the journal holds the three edits, in order');
    const edited = await predictions(client);
    assert.notDeepEqual(edited, unedited, 'the edits changed predictions');

    const reapplied = new Promise<{ model: boolean; edits: string[] }>((resolve) => client.once('reapplied', resolve));
    states.length = 0;
    await killDuringJob(client, states);
    const r = await reapplied;
    assert.equal(r.model, true);
    assert.deepEqual(r.edits, ids, 'all three edits re-applied, in order');
    assert.deepEqual((await client.request(EditList, {})).map((x) => x.id), ids);
    assert.deepEqual(await predictions(client), edited, 'predictions equal those before the kill');

    // The journal file holds the same state, for a client that starts over (below).
    const onDisk = JSON.parse(fs.readFileSync(journalPath, 'utf8'));
    assert.deepEqual(onDisk.edits.map((x: { id: string }) => x.id), ids);
  });

  test('a new client with the persisted journal brings a fresh engine to the same state', async (t) => {
    if (client.journal.edits.length === 0) {
      t.skip('needs the edits of the previous test (pending: engine/edit)');
      return;
    }
    const expected = await predictions(client);
    const ids = client.journal.edits.map((r) => r.id);
    await client.stop();
    const { client: second } = await spawnClient({ journalPath, requestTimeoutMs: 300_000 });
    try {
      assert.deepEqual((await second.request(EditList, {})).map((x) => x.id), ids);
      assert.deepEqual(await predictions(second), expected);
      // Reverting goes through the journal too.
      await second.request(EditRevert, { id: ids[1] });
      assert.deepEqual(second.journal.edits.map((r) => r.id), [ids[0], ids[2]]);
      assert.deepEqual(JSON.parse(fs.readFileSync(journalPath, 'utf8')).edits.map((x: { id: string }) => x.id), [ids[0], ids[2]]);
    } finally {
      await second.stop();
    }
  });
});

describe('client: backoff and giving up', () => {
  test('delays double with each crash in a row; after maxAttempts the client fails and requests reject', async () => {
    const { client } = await spawnClient({ restart: { initialDelayMs: 100, maxDelayMs: 150, maxAttempts: 2 } });
    const states = recordStates(client);
    try {
      for (const attempt of [1, 2]) {
        const pid = client.pid!;
        process.kill(pid, 'SIGKILL');
        await until(() => client.state === 'ready' && client.pid !== pid, 120_000, `restart ${attempt}`);
      }
      const restarting = states.filter((s) => s.state === 'restarting');
      assert.deepEqual(
        restarting.map((s) => [s.attempt, s.delayMs]),
        [
          [1, 100],
          [2, 150],
        ],
        'doubling, capped at maxDelayMs',
      );
      process.kill(client.pid!, 'SIGKILL');
      await until(() => client.state === 'failed', 30_000, 'the client to give up');
      assert.match(states.at(-1)!.reason!, /crashed 3 times in a row; giving up/);
      await assert.rejects(client.request(ModelInfoRequest, {}), (e: EngineError) => e.kind === 'ENGINE_EXITED');
    } finally {
      await client.stop();
    }
  });
});

describe('client: the engine never outlives its client', () => {
  test('when the client process dies (kill -9) mid-job, the engine exits within seconds', async () => {
    // A client process that starts an engine, starts a long trace and is then killed.
    const { enginePath, execArgv } = engineCommand();
    const script = `
      const { EngineClient } = require(${JSON.stringify(path.join(ROOT, 'engine', 'client', 'index.ts'))});
      const { ModelLoad, Trace } = require(${JSON.stringify(path.join(ROOT, 'engine', 'protocol.ts'))});
      (async () => {
        const c = await EngineClient.spawn({ enginePath: ${JSON.stringify(enginePath)}, execArgv: ${JSON.stringify(execArgv)} });
        await c.request(ModelLoad, {});
        c.request(Trace, { prompt: 'The official language of France is', subject: 'France', samples: 100 }, { onProgress: () => console.log('ENGINE ' + c.pid) }).catch(() => {});
      })();`;
    const parent = spawn(process.execPath, ['--import', 'tsx', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    parent.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    await until(() => /ENGINE (\d+)/.test(out), 180_000, 'the trace to start');
    const pid = Number(/ENGINE (\d+)/.exec(out)![1]);
    parent.kill('SIGKILL');
    const alive = () => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    assert.ok(alive(), 'the engine runs the trace');
    const t0 = Date.now();
    await until(() => !alive(), 15_000, 'the orphaned engine to exit');
    process.stderr.write(`# orphaned engine exited ${Date.now() - t0} ms after its client died\n`);
  });
});
