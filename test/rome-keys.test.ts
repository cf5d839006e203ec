/**
 * ROME's 'keys' and 'subject-keys' updates and the tuned defaults for models without reference
 * hyperparameters (issue #15), on the embedded tinyworld model, every cache in a fresh folder:
 *  - every key the update is built for moves by exactly v*'s change δ (the minimum-norm
 *    rank-one map, rome.ts multiKeyUpdate);
 *  - 'subject-keys' adds the subject's own key when the prompt has words before the subject,
 *    which is the key a paraphrase that starts with the subject reads;
 *  - the README example with the defaults: layer by tracing, statistics from 50·f tokens, the
 *    'subject-keys' formula; the edit takes, and "The capital of France is" keeps " Paris".
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { LoadedModel } from '../engine/model/load.js';
import { applyEdit, computeEdit, probePrompts, revertAllEdits, romeEditParts, revertEdit } from '../engine/edit/index.js';
import { prepareRequest, romeKeys, updateKeys } from '../engine/edit/rome.js';
import { dot, norm } from '../engine/edit/linalg.js';
import { TINYWORLD } from './helpers/golden.js';
import { editSession } from './helpers/edit-session.js';
import { slowTest } from './helpers/tier.js';

let m: LoadedModel;
editSession('rome-keys', (x) => (m = x));
const LAYER = 3;
const SAMPLES = 1000;
const CF = JSON.parse(fs.readFileSync(path.join(TINYWORLD, 'counterfact-dev.json'), 'utf8')) as Array<{
  requested_rewrite: { prompt: string; subject: string; target_new: { str: string } };
  paraphrase_prompts: string[];
}>;


/** k·W + b of the layer's MLP output matrix (float32 on the backend, as the forward). */
function layerOut(k: ArrayLike<number>): Float64Array {
  const w = m.weights.blocks[LAYER].mlpOut;
  const t = tf.tidy(() => {
    const y = tf.matMul(tf.tensor2d(Array.from(k), [1, k.length]), w.w);
    return w.b ? tf.add(y, w.b) : y;
  });
  const d = Float64Array.from(t.dataSync());
  t.dispose();
  return d;
}

const request = (i: number) => {
  const rw = CF[i].requested_rewrite;
  return { prompt: rw.prompt, subject: rw.subject, target: rw.target_new.str, layers: [LAYER] };
};

describe("ROME 'subject-keys'", () => {
  test('relation-first prompt: the template keys and the subject-alone keys all move by δ', async () => {
    const i = 6; // "The mother tongue of {} is", paraphrased "Hiroshi Dumitru's native language is"
    assert.ok(!CF[i].requested_rewrite.prompt.startsWith('{}'));
    const parts = await romeEditParts(m, { ...request(i), formula: 'subject-keys' }, {}, { statsSamples: SAMPLES });
    assert.equal(parts.record.info.formula, 'subject-keys');
    const req = prepareRequest(m, request(i));
    const keys = updateKeys(m, LAYER, req, parts.templates, parts.keys, 'subject-keys');
    assert.equal(keys.length, 2 * parts.templates.length);
    const alone = romeKeys(m, LAYER, { ...req, prompt: '{}' }, parts.templates);
    const before = keys.map(layerOut);
    applyEdit(m, parts.record);
    try {
      keys.forEach((k, j) => {
        const moved = layerOut(k).map((x, c) => x - before[j][c]);
        const err = norm(moved.map((x, c) => x - parts.v.delta[c])) / norm(parts.v.delta);
        assert.ok(err < 0.02, `key ${j}: change off δ by ${err}`);
      });
    } finally {
      revertEdit(m, parts.record.id);
    }
    // The paraphrase that names the subject first reads exactly the subject-alone bare key.
    assert.deepEqual(alone.kBare, keys[parts.templates.length]);
    const { u } = parts.update;
    assert.ok(dot(alone.kBare, u) > 0.9 * dot(parts.keys.kBare, u), 'the update reaches the subject-first key');
  });

  test("subject-first prompt: 'subject-keys' uses the template keys, as 'keys'", async () => {
    const i = 1; // "{} works as a"
    const req = prepareRequest(m, request(i));
    const parts = await romeEditParts(m, { ...request(i), formula: 'keys' }, {}, { statsSamples: SAMPLES });
    assert.equal(updateKeys(m, LAYER, req, parts.templates, parts.keys, 'subject-keys'), parts.keys.all);
  });
});

describe('defaults (no layer, no statistics size, no formula given)', () => {
  // Slow: a cold cache, so the layer choice traces 40 facts and the statistics are computed.
  slowTest('the README example takes and "The capital of France is" keeps " Paris"', async () => {
    const rec = await computeEdit(m, { prompt: '{} is located in the country of', subject: 'Paris', target: 'Japan' });
    assert.equal(rec.info.formula, 'subject-keys');
    assert.match(String(rec.info.layer_source), /causal tracing/);
    const f = m.config.dMlp;
    assert.ok(Number(rec.info.stats_tokens) >= 50 * f && Number(rec.info.stats_tokens) < 60 * f, `stats tokens ${rec.info.stats_tokens}`);
    assert.equal(rec.took, true, rec.reason);
    applyEdit(m, rec);
    try {
      const [edited, capital] = probePrompts(m, ['Paris is located in the country of', 'The capital of France is'], []);
      assert.equal(edited.top.token, ' Japan');
      assert.equal(capital.top.token, ' Paris');
    } finally {
      revertAllEdits(m);
    }
  });
});
