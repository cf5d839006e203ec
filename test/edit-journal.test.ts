/**
 * The extension's edit journal (extension/editJournal.ts, what EngineService uses) against
 * real engine processes: an edit is written to `<dir>/<content hash>.json` as the engine
 * acknowledges it; after `kill -9` the client restarts the engine and the edit is back; a
 * fresh engine (what "Restart engine" and a window reload start) gets it back from the file
 * by re-applying the record, without recomputing; reverting empties the file. A corrupt
 * file is moved aside with a warning naming it; a record the engine refuses stays in the
 * file and is reported.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { EngineClient } from '../engine/client/index.js';
import { execFileSync } from 'node:child_process';
import { EditProbe, EditSave, ModelLoad, Predict, type EditApplyParams, type ModelInfo } from '../engine/protocol.js';
import { EDITS_FORMAT, parseEditsFile, PersistentEditJournal, type EditsChange } from '../extension/editJournal.js';
import { ROOT, spawnClient, until, type LogBuffer } from './helpers/engine-process.js';

/** ROME at layer 2 with small statistics and 10 v* steps: quick, and it moves the prediction. */
const EDIT: EditApplyParams = {
  request: { prompt: 'The capital of {} is', subject: 'France', target: 'Rome', layers: [2] },
  options: { statsSamples: 200, hparams: { vNumGradSteps: 10 } },
};
const PROMPT = 'The capital of France is';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-journal-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function top(c: EngineClient): Promise<string> {
  return (await c.request(Predict, { prompt: PROMPT, k: 1 })).top[0].token;
}

describe('edit journal: persisted per model, re-applied after kill -9, restart and reload', () => {
  const dir = path.join(tmp, 'edits');
  const warnings: string[] = [];
  let first: { client: EngineClient; log: LogBuffer };
  let second: { client: EngineClient; log: LogBuffer } | undefined;
  let info: ModelInfo;
  let original: string;
  let recordId: string;

  before(async () => {
    first = await spawnClient({ requestTimeoutMs: 300_000, restart: { initialDelayMs: 200, maxDelayMs: 2000, maxAttempts: 5 } });
    info = await first.client.request(ModelLoad, {});
  });

  after(async () => {
    await first?.client.stop();
    await second?.client.stop();
  });

  test('an applied edit is in <dir>/<content hash>.json, and listeners hear of it', async () => {
    assert.match(info.contentHash, /^[0-9a-f]{64}$/);
    const journal = new PersistentEditJournal(dir, (m) => warnings.push(m));
    const changes: EditsChange[] = [];
    journal.onChange((c) => changes.push(c));
    await journal.restore(first.client, info);
    original = await top(first.client);
    assert.equal(original, ' Paris');
    const record = await journal.apply(first.client, EDIT);
    recordId = record.id;
    assert.equal(await top(first.client), ' Rome', 'the edit took');
    const file = path.join(dir, `${info.contentHash}.json`);
    assert.equal(journal.file, file);
    const stored = parseEditsFile(fs.readFileSync(file, 'utf8'));
    assert.equal(stored.format, EDITS_FORMAT);
    assert.equal(stored.model.contentHash, info.contentHash);
    assert.deepEqual(stored.edits.map((r) => r.id), [record.id]);
    assert.deepEqual(stored.edits[0].deltas, record.deltas, 'the deltas as computed');
    const applied = changes.find((c) => c.cause === 'apply');
    assert.ok(applied, `an apply change in ${JSON.stringify(changes.map((c) => c.cause))}`);
    assert.deepEqual(applied.added.map((r) => r.id), [record.id]);
    assert.deepEqual(applied.edits.map((r) => r.id), [record.id]);

    // kill -9: the client restarts the engine and re-applies the edit; resync reports it.
    const pid = first.client.pid!;
    process.kill(pid, 'SIGKILL');
    await until(() => first.client.pid !== pid && first.client.state === 'ready', 240_000, 'the engine to restart');
    await journal.resync(first.client);
    assert.equal(await top(first.client), ' Rome', 'the edit survived kill -9');
    assert.ok(changes.some((c) => c.cause === 'restore' && c.edits.some((r) => r.id === record.id)));
    await first.client.stop();
  });

  test('a fresh engine (Restart engine, window reload) gets the edit back from the file without recomputing', async () => {
    second = await spawnClient({ requestTimeoutMs: 300_000 });
    const m = await second.client.request(ModelLoad, {});
    assert.equal(m.contentHash, info.contentHash);
    assert.equal(await top(second.client), original, 'a new engine starts unedited');
    const journal = new PersistentEditJournal(dir, (w) => warnings.push(w));
    const r = await journal.restore(second.client, m);
    assert.deepEqual(r, { reapplied: [recordId], failed: [] });
    assert.equal(await top(second.client), ' Rome');
    // Re-applied as a record: the engine ran no edit computation (no v*, no statistics).
    assert.match(second.log.text, new RegExp(`edit/apply .*re-apply ${recordId}`));
    assert.doesNotMatch(second.log.text, /France → Rome/);

    // edit/probe: the unedited weights (a view; nothing changes in the engine) and the edited ones.
    const probe = (unedited: boolean) => second!.client.request(EditProbe, { prompts: [PROMPT, 'The capital of Japan is'], targets: ['Rome', 'Paris'], tokens: 5, unedited });
    const [b, a] = [await probe(true), await probe(false)];
    assert.deepEqual([b.edits, a.edits], [[], [recordId]]);
    assert.deepEqual(b.prompts.map((x) => x.top[0].token), [' Paris', ' Tokyo']);
    assert.deepEqual(a.prompts.map((x) => x.top[0].token), [' Rome', ' Tokyo'], 'the neighbour keeps its answer');
    assert.equal(a.prompts[0].top.length, 5);
    assert.ok(b.prompts[0].targets[0].prob < 0.01 && a.prompts[0].targets[0].prob > 0.5, `p(Rome) ${b.prompts[0].targets[0].prob} → ${a.prompts[0].targets[0].prob}`);
    assert.ok(a.prompts[0].generation?.startsWith(' Rome'), `generation after: ${a.prompts[0].generation}`);
    assert.equal(await top(second.client), ' Rome', 'probing the unedited weights left the edit in place');

    // edit/save: a checkpoint folder another process loads with the edit in its weights.
    const saved = await second.client.request(EditSave, { dir: path.join(tmp, 'saved') });
    assert.deepEqual(saved.edits, [recordId]);
    assert.ok(saved.files.includes('model.safetensors') && fs.existsSync(path.join(saved.dir, 'model.safetensors')));
    const cli = execFileSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'engine', 'cli', 'main.ts'), 'predict', PROMPT, '--model', saved.dir, '--top', '1', '--json'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(JSON.parse(cli).top[0].token, ' Rome', 'the saved model predicts the edit');

    await journal.revert(second.client, recordId);
    assert.equal(await top(second.client), original, 'reverted');
    assert.deepEqual(parseEditsFile(fs.readFileSync(journal.file!, 'utf8')).edits, []);
    assert.deepEqual(warnings, []);
  });

  test('a corrupt journal is moved aside with a warning naming the file; a refused record stays', async () => {
    const file = path.join(dir, `${info.contentHash}.json`);
    fs.writeFileSync(file, '{"format": "factlens-edits-v1", "edits": [');
    const journal = new PersistentEditJournal(dir, (w) => warnings.push(w));
    await journal.restore(second!.client, info);
    assert.equal(warnings.length, 1);
    assert.ok(warnings[0].includes(file), `the warning names ${file}: ${warnings[0]}`);
    const moved = /moved to (\S+)/.exec(warnings[0])?.[1];
    assert.ok(moved && fs.existsSync(moved), `moved aside: ${warnings[0]}`);
    assert.equal(fs.readFileSync(moved, 'utf8'), '{"format": "factlens-edits-v1", "edits": [', 'the corrupt file is kept as it was');
    assert.deepEqual(parseEditsFile(fs.readFileSync(file, 'utf8')).edits, [], 'a new, empty journal');

    // A record computed on another model: the engine refuses it; it is reported and kept.
    const record = await journal.apply(second!.client, EDIT);
    await journal.revert(second!.client, record.id);
    const foreign = { ...record, id: `${record.id}-foreign`, modelHash: 'f'.repeat(64) };
    fs.writeFileSync(file, JSON.stringify({ format: EDITS_FORMAT, model: { name: 'tinyworld', contentHash: info.contentHash, dir: info.dir }, edits: [foreign] }));
    const again = new PersistentEditJournal(dir, (w) => warnings.push(w));
    const r = await again.restore(second!.client, info);
    assert.deepEqual(r.reapplied, []);
    assert.equal(r.failed.length, 1);
    assert.match(r.failed[0].message, /computed on another model/);
    assert.ok(warnings.some((w) => w.includes(foreign.id) && w.includes(file) && /stays in the journal/.test(w)), warnings.join('\n'));
    assert.deepEqual(parseEditsFile(fs.readFileSync(file, 'utf8')).edits.map((x) => x.id), [foreign.id], 'the refused record is still in the file');
    assert.equal(await top(second!.client), original);
  });
});
