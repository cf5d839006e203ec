/**
 * The verdict on every edit (issue #15): `took` (the new target is the greedy answer on the
 * edit prompt once the edit is applied) and, when not, `reason` with the measured cause — on the
 * edit record, in `factlens edit` (JSON and the table's first line), in the evaluation's
 * per-record rows and through the engine's protocol validation of re-applied records.
 *
 * Real edits on the embedded tinyworld model; statistics from 1,000 corpus documents in a fresh
 * cache folder.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { LoadedModel } from '../engine/model/load.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch } from '../engine/runtime/batch.js';
import { applyEdit, computeEdit, greedyCheck, listEdits, revertAllEdits, type EditRecord } from '../engine/edit/index.js';
import { evaluateCounterFact } from '../engine/eval/counterfact.js';
import { wireMethod } from '../engine/eval/methods.js';
import { main } from '../engine/cli/main.js';
import { TEST_BACKEND } from './helpers/model.js';
import { TINYWORLD } from './helpers/golden.js';
import { editSession } from './helpers/edit-session.js';

let m: LoadedModel;
editSession('verdict', (x) => (m = x));
const LAYER = 3;
const SAMPLES = 1000;
const CF_PATH = path.join(TINYWORLD, 'counterfact-dev.json');
const CF = JSON.parse(fs.readFileSync(CF_PATH, 'utf8')) as unknown[];


function logits(prompt: string): Float32Array {
  const t = tf.tidy(() => forward(m, padBatch([m.tokenizer.encode(prompt)])).logits!);
  const d = t.dataSync() as Float32Array;
  t.dispose();
  return d;
}

const paris = { prompt: '{} is located in the country of', subject: 'Paris', target: 'Japan', layers: [LAYER] };

describe('edit verdict', () => {
  let rec: EditRecord;
  test('an edit that takes: took, no reason, the model untouched by the check', async () => {
    const before = logits('Paris is located in the country of');
    rec = await computeEdit(m, { ...paris, formula: 'reference' }, {}, { statsSamples: SAMPLES });
    assert.equal(listEdits(m).length, 0, 'computing (and checking) an edit applies nothing');
    assert.deepEqual(logits('Paris is located in the country of'), before, 'the check reverts bit for bit');
    assert.equal(rec.took, true, rec.reason);
    assert.equal(rec.reason, undefined);
    assert.equal(rec.info.after_top, ' Japan');
    // The verdict is what the applied edit does.
    applyEdit(m, rec);
    try {
      const [g] = greedyCheck(m, [paris]);
      assert.equal(g.took, true);
      assert.equal(g.top, ' Japan');
      assert.ok(Math.abs(g.targetProb - Number(rec.info.after_target_prob)) < 1e-6);
    } finally {
      revertAllEdits(m);
    }
  });

  test('an edit that does not take says why (v* capped by a tiny clamp) and what to try', async () => {
    const r = await computeEdit(m, paris, {}, { statsSamples: SAMPLES, hparams: { clampNormFactor: 0.05 } });
    assert.equal(r.took, false);
    assert.equal(r.info.after_top, ' France');
    assert.match(r.reason!, /" France"/);
    assert.match(r.reason!, /v\* itself reaches only p/);
    assert.match(r.reason!, /clamp radius/);
    assert.match(r.reason!, /--clamp/);
  });

  test('multi-token targets: every target token must be the greedy answer', async () => {
    const [g] = greedyCheck(m, [{ prompt: 'The capital of {} is', subject: 'France', target: 'Paris Paris' }]);
    assert.equal(g.top, ' Paris');
    assert.equal(g.took, false, 'the first token alone is not enough');
    const [h] = greedyCheck(m, [{ prompt: 'The capital of {} is', subject: 'France', target: 'Paris' }]);
    assert.equal(h.took, true);
  });

  test('eval per-record rows carry took / reason', async () => {
    const wiring = wireMethod('rome', { batch: 1, control: {}, model: m, statsSamples: SAMPLES, layers: [LAYER], hparams: { clampNormFactor: 0.05 } });
    const r = await evaluateCounterFact(m, CF, { ...wiring.opts, limit: 2, genEvery: 0, perRecord: true });
    assert.equal(r.per_record!.length, 2);
    for (const row of r.per_record!) {
      assert.equal(typeof row.took, 'boolean');
      assert.equal(row.took, row.post.metrics.rewrite_acc === 1, 'took is the greedy match on the edit prompt');
      if (!row.took) assert.match(row.reason!, /v\* itself reaches only p/);
    }
  });

  test('factlens edit prints the verdict first and each prompt\'s own top answer before and after', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const io = { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) }, env: process.env };
    const common = ['--prompt', paris.prompt, '--subject', 'Paris', '--target', 'Japan', '--layer', String(LAYER), '--stats-samples', String(SAMPLES), '--tokens', '0'];
    const backend = TEST_BACKEND ? ['--backend', TEST_BACKEND] : [];
    let code = await main(['edit', ...common, '--clamp', '0.05', '--check', 'The capital of France is', ...backend], io);
    assert.equal(code, 0, err.join(''));
    const text = out.join('');
    const lines = text.split('\n');
    assert.match(lines[0], /^DID NOT TAKE: the edit prompt now gives " France"/);
    assert.match(lines[3], /^prompt\s+top answer before\s+after/);
    assert.match(text, /The capital of France is"\s+" Paris" \S+\s+" Paris"/);
    out.length = 0;
    code = await main(['edit', ...common, '--formula', 'reference', '--json', ...backend], io);
    assert.equal(code, 0, err.join(''));
    const j = JSON.parse(out.join(''));
    assert.equal(j.took, true);
    assert.equal(j.record.took, true);
    assert.equal(j.reason, undefined);
  });
});
