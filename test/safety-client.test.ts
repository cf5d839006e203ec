/**
 * Client liveness (issue #13, item 8): a frozen engine is found by the heartbeat and restarted,
 * a damaged journal is moved aside (kept, named) and the client starts, and journal problems
 * reach a listener registered before the start. Real engine processes throughout.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EngineError, type EngineClient, type StateEvent } from '../engine/client/index.js';
import { EditApply, ModelLoad, Predict } from '../engine/protocol.js';
import { spawnClient, until } from './helpers/engine-process.js';

let work: string;
const stopped: number[] = [];

before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-liveness-'));
});
after(() => {
  // A SIGSTOPped engine the client failed to kill must not outlive the test.
  for (const pid of stopped) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone, as it should be */
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
});

describe('heartbeat', () => {
  let client: EngineClient;
  after(() => client?.stop());

  test('a stopped (SIGSTOP) engine is killed and restarted; the pending request fails instead of hanging; the model is back', async () => {
    const states: StateEvent[] = [];
    const warnings: string[] = [];
    ({ client } = await spawnClient({
      journalPath: path.join(work, 'hb-journal.json'),
      heartbeat: { intervalMs: 250, timeoutMs: 5_000 },
      restart: { initialDelayMs: 100 },
      listeners: { state: (e) => states.push(e), warning: (w) => warnings.push(w.message) },
    }));
    await client.request(ModelLoad, {});
    const pid = client.pid!;
    stopped.push(pid);
    process.kill(pid, 'SIGSTOP');
    const pending = client.request(Predict, { prompt: 'The capital of France is', k: 1 }).then(
      () => 'answered',
      (e: EngineError) => e.kind,
    );
    // Without a heartbeat this never settles (no timeout on the request).
    const outcome = await Promise.race([pending, new Promise((r) => setTimeout(() => r('still pending after 60 s'), 60_000))]);
    assert.equal(outcome, 'ENGINE_EXITED');
    await until(() => client.state === 'ready' && client.pid !== pid, 120_000, 'a restarted engine');
    assert.ok(states.some((s) => s.state === 'crashed' && /did not answer a heartbeat within 5000 ms and is stopped/.test(s.reason ?? '')), JSON.stringify(states));
    assert.ok(warnings.some((w) => /heartbeat/.test(w)), warnings.join('\n'));
    // The journal brought the model back on the new engine.
    assert.equal((await client.request(Predict, { prompt: 'The capital of France is', k: 1 })).top[0].token, ' Paris');
    assert.throws(() => process.kill(pid, 0), 'the hung engine was killed');
  });
});

describe('the journal', () => {
  test('a corrupt journal is moved aside (kept, named in a warning) and the client starts', async () => {
    const journalPath = path.join(work, 'corrupt.json');
    const damaged = '{"format": "factlens-journal-v1", "model": {}, "edits": [{"id": "e1", "del';
    fs.writeFileSync(journalPath, damaged);
    const warnings: Array<{ message: string; file?: string }> = [];
    const { client } = await spawnClient({ journalPath, heartbeat: false, listeners: { warning: (w) => warnings.push(w) } });
    try {
      assert.equal(client.state, 'ready');
      assert.equal(warnings.length, 1, JSON.stringify(warnings));
      const w = warnings[0];
      assert.match(w.message, /the edit journal .*corrupt\.json could not be read: it is not valid JSON/);
      assert.ok(w.file && w.file.startsWith(`${journalPath}.corrupt-`), w.file);
      assert.equal(fs.readFileSync(w.file!, 'utf8'), damaged, 'the damaged journal is kept as it was');
      assert.ok(w.message.includes(w.file!));
      // The client works and writes a fresh journal.
      await client.request(ModelLoad, {});
      assert.equal(JSON.parse(fs.readFileSync(journalPath, 'utf8')).format, 'factlens-journal-v1');
    } finally {
      await client.stop();
    }
  });

  test('an edit the engine refuses on re-apply reaches a listener registered before the start', async () => {
    // A journal written by a real session: one real edit, then the record's deltas damaged.
    const journalPath = path.join(work, 'bogus.json');
    const { client: first } = await spawnClient({ journalPath, heartbeat: false });
    try {
      await first.request(ModelLoad, {});
      await first.request(EditApply, {
        request: { prompt: '{} is located in the country of', subject: 'Paris', target: 'Japan', method: 'ft', layers: [3] },
      });
    } finally {
      await first.stop();
    }
    const j = JSON.parse(fs.readFileSync(journalPath, 'utf8'));
    assert.equal(j.edits.length, 1);
    j.edits[0].deltas[0].layer = 99;
    fs.writeFileSync(journalPath, JSON.stringify(j));

    const errors: Array<{ id: string; message: string }> = [];
    const { client } = await spawnClient({
      journalPath,
      heartbeat: false,
      listeners: { journalError: ({ record, error }) => errors.push({ id: record.id, message: error.message }) },
    });
    try {
      assert.equal(errors.length, 1, 'the refused record was reported during the start');
      assert.equal(errors[0].id, j.edits[0].id);
      assert.match(errors[0].message, /layer 99/);
      assert.equal(client.journal.edits.length, 1, 'the record stays in the journal');
    } finally {
      await client.stop();
    }
  });
});
