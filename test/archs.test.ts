/**
 * The rotary / GQA architectures (GPT-J, GPT-NeoX, Llama, Qwen2) against transformers'
 * golden outputs, KV-cached vs uncached generation, and save → reload of (edited) weights.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's Node bundle registers no gradients (the union package does); the gradient test needs them.
import '@tensorflow/tfjs-core/dist/register_all_gradients.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch } from '../engine/runtime/batch.js';
import { generate } from '../engine/runtime/generate.js';
import { interventionHook } from '../engine/runtime/interventions.js';
import { site } from '../engine/runtime/sites.js';
import { inverseFrequencies, rotationMatrix } from '../engine/runtime/rotary.js';
import { loadModel, disposeModel, type LoadedModel } from '../engine/model/load.js';
import { restorations, type Prepared } from '../engine/trace/prepare.js';
import { traceFast } from '../engine/trace/fast.js';
import { traceNaive } from '../engine/trace/naive.js';
import { Job } from '../engine/util/jobs.js';
import { tidyData } from '../engine/util/scope.js';
import { openCheckpoint } from '../engine/model/checkpoint.js';
import { writeSafetensors } from '../engine/model/safetensors.js';
import { adapterFor, supportedModelTypes } from '../engine/model/adapters/index.js';
import { reorderNeoxRows } from '../engine/model/adapters/gpt-neox.js';
import type { DecoderWeights } from '../engine/model/decoder.js';
import { FactLensError } from '../engine/errors.js';
import { ARCHS, maxAbsDiff, readJson, relDiff, type GoldenForwardCase } from './helpers/golden.js';
import { model, TEST_BACKEND } from './helpers/model.js';

type Case = GoldenForwardCase;

const ARCH_DIRS = ['gptj', 'gpt-neox', 'llama', 'qwen2'];
const EXPECTED: Record<string, Partial<LoadedModel['config']> & { style: string; dims: number }> = {
  gptj: { modelType: 'gptj', parallel: 'shared-norm', act: 'gelu_new', norm: 'layernorm', nKvHead: 4, style: 'interleaved', dims: 8 },
  'gpt-neox': { modelType: 'gpt_neox', parallel: 'separate-norm', act: 'gelu', norm: 'layernorm', nKvHead: 4, style: 'half', dims: 4 },
  llama: { modelType: 'llama', parallel: 'none', act: 'silu', norm: 'rmsnorm', nKvHead: 2, gatedMlp: true, normEps: 1e-5, style: 'half', dims: 16 },
  qwen2: { modelType: 'qwen2', parallel: 'none', act: 'silu', norm: 'rmsnorm', nKvHead: 2, gatedMlp: true, normEps: 1e-6, style: 'half', dims: 16 },
};

function entrySites(L: number): string[] {
  return [site.residPre(0), ...Array.from({ length: L - 1 }, (_, l) => site.residPost(l)), site.finalNorm];
}

/** Log-probs, raw logits and the hidden-state entries (transformers' hidden_states) of the last token. */
function run(m: LoadedModel, ids: number[]) {
  const out = tf.tidy(() => {
    const reads = new Map<string, tf.Tensor3D>();
    const sites = entrySites(m.config.nLayer);
    const hook = interventionHook(sites.map((s) => ({ site: s, op: 'read' as const })), reads);
    const res = forward(m, padBatch([ids]), { hook });
    const t = ids.length - 1;
    const entries = sites.map((s) => tf.slice(reads.get(s)!, [0, t, 0], [1, 1, -1]));
    return { logprobs: tf.logSoftmax(res.logits!), logits: res.logits!, entries };
  });
  // Read after the tidy: tidy walks returned arrays element by element.
  const read = (x: tf.Tensor) => Float32Array.from(x.dataSync());
  const result = { logprobs: read(out.logprobs), logits: read(out.logits), entries: out.entries.map((e) => Array.from(read(e))) };
  tf.dispose([out.logprobs, out.logits, ...out.entries]);
  return result;
}

/** Checks one golden case; returns the largest log-prob and hidden-norm differences seen. */
function checkCase(m: LoadedModel, c: Case, label: string): { logprob: number; norm: number } {
  const r = run(m, c.ids);
  const order = Array.from(r.logprobs.keys()).sort((a, b) => r.logprobs[b] - r.logprobs[a]).slice(0, 10);
  assert.deepEqual(order, c.top10_ids, `${label}: top-10 ids`);
  let logprob = 0;
  c.top10_ids.forEach((id, i) => {
    const diff = Math.abs(r.logprobs[id] - c.top10_logprobs[i]);
    logprob = Math.max(logprob, diff);
    assert.ok(diff <= 1e-4, `${label}: logprob of ${id}: ${r.logprobs[id]} vs ${c.top10_logprobs[i]}`);
  });
  c.last_logits_first8.forEach((v, i) => {
    assert.ok(Math.abs(r.logits[i] - v) <= 1e-3 * Math.max(1, Math.abs(v)), `${label}: logit ${i}: ${r.logits[i]} vs ${v}`);
  });
  assert.equal(r.entries.length, c.hidden_last_token_norms.length, `${label}: number of hidden-state entries`);
  let norm = 0;
  r.entries.forEach((e, i) => {
    const n = Math.hypot(...e);
    const rel = relDiff(n, c.hidden_last_token_norms[i]);
    norm = Math.max(norm, rel);
    assert.ok(rel <= 1e-4, `${label}: hidden[${i}] norm ${n} vs ${c.hidden_last_token_norms[i]}`);
    c.hidden_last_token_first8[i].forEach((v, j) => {
      assert.ok(Math.abs(e[j] - v) <= 1e-4 * Math.max(1, Math.abs(v)) + 1e-5, `${label}: hidden[${i}][${j}] ${e[j]} vs ${v}`);
    });
  });
  return { logprob, norm };
}

function archModel(arch: string): Promise<LoadedModel> {
  return model({ dir: path.join(ARCHS, arch), withoutTokenizer: true });
}

function logitsOf(m: { config: LoadedModel['config']; weights: DecoderWeights }, rows: number[][]): Float32Array {
  return tidyData(() => forward(m, padBatch(rows, 'left')).logits!);
}

for (const arch of ARCH_DIRS) {
  test(`archs/${arch}: config maps onto the canonical decoder`, async () => {
    const m = await archModel(arch);
    const want = EXPECTED[arch];
    const { style, dims, ...fields } = want;
    for (const [k, v] of Object.entries(fields)) assert.equal((m.config as unknown as Record<string, unknown>)[k], v, `${arch}: ${k}`);
    assert.deepEqual(m.config.positional, { kind: 'rotary', style, dims, base: 10000 });
    assert.equal(m.weights.wpe, undefined);
  });

  test(`archs/${arch}: every golden case matches transformers`, async () => {
    const m = await archModel(arch);
    const g = readJson<{ architecture: string; cases: Case[] }>(path.join(ARCHS, arch, 'golden.json'));
    assert.ok(g.cases.length >= 4);
    let worst = { logprob: 0, norm: 0 };
    for (const c of g.cases) {
      const d = checkCase(m, c, `${arch} len ${c.ids.length}`);
      worst = { logprob: Math.max(worst.logprob, d.logprob), norm: Math.max(worst.norm, d.norm) };
    }
    console.log(`# ${arch} (${m.backend}): max |Δlogprob| ${worst.logprob.toExponential(2)}, max rel Δnorm ${worst.norm.toExponential(2)}`);
  });

  test(`archs/${arch}: a left/right padded batch gives each row the logits it gets alone`, async () => {
    const m = await archModel(arch);
    const rows = readJson<{ cases: Case[] }>(path.join(ARCHS, arch, 'golden.json')).cases.map((c) => c.ids);
    const alone = rows.map((ids) => tidyData(() => forward(m, padBatch([ids])).logits!));
    for (const side of ['left', 'right'] as const) {
      const batched = tidyData(() => forward(m, padBatch(rows, side)).logits!);
      const v = m.config.vocabSize;
      rows.forEach((_, r) => {
        const worst = maxAbsDiff(batched.subarray(r * v, (r + 1) * v), alone[r]);
        assert.ok(worst < 1e-4, `${arch} ${side} padding, row ${r}: max logit difference ${worst}`);
      });
    }
  });

  test(`archs/${arch}: KV-cached generation equals uncached generation`, async () => {
    const m = await archModel(arch);
    const cases = readJson<{ cases: Case[] }>(path.join(ARCHS, arch, 'golden.json')).cases;
    const prompts = [cases[1].ids, cases[2].ids]; // lengths 5 and 17: left padding in the batch
    assert.notEqual(prompts[0].length, prompts[1].length);
    const before = tf.memory().numTensors;
    const cached = generate(m, prompts, { maxNewTokens: 12, useCache: true });
    const uncached = generate(m, prompts, { maxNewTokens: 12, useCache: false });
    assert.equal(tf.memory().numTensors, before, 'generation leaks no tensors');
    assert.deepEqual(cached, uncached);
    assert.equal(cached[0].length, 12);
    // Each row alone generates the same as in the padded batch.
    prompts.forEach((p, r) => assert.deepEqual(generate(m, [p], { maxNewTokens: 12, useCache: true })[0], cached[r], `row ${r} alone`));
  });

  test(`archs/${arch}: export → safetensors → reload round-trips, also after an edit`, async () => {
    const m = await archModel(arch);
    const ckpt = openCheckpoint(m.dir);
    // Unedited: the export reproduces the checkpoint's tensors bit for bit (names, shapes, layout).
    const exported = m.adapter.exportTensors(m.weights, m.config);
    assert.deepEqual(exported.map((t) => t.name).sort(), ckpt.tensorNames().sort(), `${arch}: exported tensor names`);
    for (const t of exported) {
      const orig = ckpt.read(t.name);
      assert.deepEqual(t.shape, orig.shape, `${arch}: shape of ${t.name}`);
      assert.ok(maxAbsDiff(t.data, orig.data) === 0, `${arch}: data of ${t.name}`);
    }

    // Edited: a rank-one change to layer 1's MLP output matrix and to its fused qkv (all of
    // q, k and v columns), as ROME would make, survives save and reload exactly.
    const l = 1;
    const edited: DecoderWeights = {
      ...m.weights,
      blocks: m.weights.blocks.map((b, i) =>
        i !== l
          ? b
          : {
              ...b,
              mlpOut: { ...b.mlpOut, w: tf.tidy(() => tf.add(b.mlpOut.w, tf.outerProduct(tf.randomNormal([m.config.dMlp], 0, 0.05, 'float32', 1), tf.randomNormal([m.config.dModel], 0, 0.05, 'float32', 2))) as tf.Tensor2D) },
              qkv: { ...b.qkv, w: tf.tidy(() => tf.add(b.qkv.w, tf.outerProduct(tf.randomNormal([m.config.dModel], 0, 0.2, 'float32', 3), tf.randomNormal([b.qkv.w.shape[1]], 0, 0.2, 'float32', 4))) as tf.Tensor2D) },
            },
      ),
    };
    const em = { config: m.config, weights: edited };
    const rows = readJson<{ cases: Case[] }>(path.join(ARCHS, arch, 'golden.json')).cases.slice(1, 3).map((c) => c.ids);
    const base = logitsOf(m, rows);
    const want = logitsOf(em, rows);
    assert.ok(maxAbsDiff(base, want) > 1e-3, 'the edit changes the logits');

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `factlens-${arch}-`));
    try {
      fs.copyFileSync(path.join(m.dir, 'config.json'), path.join(dir, 'config.json'));
      writeSafetensors(path.join(dir, 'model.safetensors'), m.adapter.exportTensors(edited, m.config), { format: 'pt' });
      const back = await loadModel({ dir, backend: TEST_BACKEND, withoutTokenizer: true });
      try {
        assert.equal(back.weights.tied, m.weights.tied);
        assert.deepEqual(logitsOf(back, rows), want, `${arch}: reloaded logits equal the edited model's`);
      } finally {
        disposeModel(back);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      edited.blocks[l].mlpOut.w.dispose();
      edited.blocks[l].qkv.w.dispose();
    }
  });
}

test('rotary pairing matrices: interleaved (GPT-J) and half (NeoX/Llama) with a pass-through tail', () => {
  const x = Float32Array.from([1, 2, 3, 4, 5, 6]);
  const apply = (r: Float32Array) => Array.from({ length: 6 }, (_, c) => x.reduce((a, xi, i) => a + xi * r[i * 6 + c], 0));
  assert.deepEqual(apply(rotationMatrix(6, { dims: 4, style: 'interleaved', base: 10000 })), [-2, 1, -4, 3, 0, 0]);
  assert.deepEqual(apply(rotationMatrix(6, { dims: 4, style: 'half', base: 10000 })), [-3, -4, 1, 2, 0, 0]);
  const fi = inverseFrequencies(6, { dims: 4, style: 'interleaved', base: 10000 });
  const fh = inverseFrequencies(6, { dims: 4, style: 'half', base: 10000 });
  assert.deepEqual(Array.from(fi), [1, 1, 0.01, 0.01, 0, 0].map(Math.fround));
  assert.deepEqual(Array.from(fh), [1, 0.01, 1, 0.01, 0, 0].map(Math.fround));
});

test('NeoX fused-QKV row reorder is inverted exactly', () => {
  const nHead = 3;
  const dh = 2;
  const rows = 3 * nHead * dh;
  const t = { shape: [rows, 2], data: Float32Array.from({ length: rows * 2 }, (_, i) => i) };
  const canon = reorderNeoxRows(t, nHead, dh, true);
  // Canonical row block 0 is head 0's q; block 1 is head 1's q (NeoX rows 6..7).
  assert.deepEqual(Array.from(canon.data.subarray(0, 4)), [0, 1, 2, 3]);
  assert.deepEqual(Array.from(canon.data.subarray(4, 8)), [12, 13, 14, 15]);
  assert.deepEqual(reorderNeoxRows(canon, nHead, dh, false), t);
});

test('an unsupported model_type lists every supported one', () => {
  const types = supportedModelTypes();
  for (const t of ['gpt2', 'gptj', 'gpt_neox', 'llama', 'qwen2']) assert.ok(types.includes(t), t);
  assert.throws(
    () => adapterFor({ model_type: 'mamba' }, '/m/config.json'),
    (e: unknown) =>
      e instanceof FactLensError &&
      e.code === 'UNSUPPORTED_MODEL_TYPE' &&
      ['gpt2', 'gptj', 'gpt_neox', 'llama', 'qwen2'].every((t) => e.message.includes(t)) &&
      (e.data.supported as string[]).includes('qwen2'),
  );
});

test('scaled rotary (rope_type other than default) is refused with the field named', () => {
  const cfg = JSON.parse(fs.readFileSync(path.join(ARCHS, 'llama', 'config.json'), 'utf8'));
  cfg.rope_parameters = { rope_type: 'llama3', rope_theta: 500000, factor: 8 };
  assert.throws(
    () => adapterFor(cfg, 'config.json').parseConfig(cfg, 'config.json'),
    (e: unknown) => e instanceof FactLensError && e.code === 'BAD_CONFIG' && e.data.field === 'rope_parameters',
  );
});

for (const arch of ARCH_DIRS) {
  test(`archs/${arch}: gradients flow through rotary attention (matches finite differences)`, async () => {
    const m = await archModel(arch);
    const ids = readJson<{ cases: Case[] }>(path.join(ARCHS, arch, 'golden.json')).cases[2].ids;
    const target = 7;
    // Log-prob of `target` at the last position as a function of a vector added to block 0's output.
    const f = (delta: tf.Tensor) => {
      const hook = (name: string, x: tf.Tensor3D) => (name === site.residPost(0) ? (tf.add(x, delta) as tf.Tensor3D) : x);
      const lp = tf.logSoftmax(forward(m, padBatch([ids]), { hook }).logits!);
      return tf.sum(tf.slice(lp, [0, target], [1, 1])) as tf.Scalar;
    };
    const d = m.config.dModel;
    const zero = tf.zeros([d]) as tf.Tensor1D;
    const grad = tidyData(() => tf.grad(f)(zero));
    assert.ok(grad.some((g) => g !== 0) && grad.every(Number.isFinite));
    // A unit direction; the residual stream of these tiny models has norm ≈ 0.3, so keep the step small.
    const raw = Array.from({ length: d }, (_, i) => Math.sin(i + 1));
    const len = Math.hypot(...raw);
    const dir = Float32Array.from(raw, (v) => v / len);
    const eps = 1e-3;
    const fd = tf.tidy(() => {
      const at = (s: number) => f(tf.tensor1d(dir.map((v) => v * s))).dataSync()[0];
      return (at(eps) - at(-eps)) / (2 * eps);
    });
    const analytic = grad.reduce((a, g, i) => a + g * dir[i], 0);
    console.log(`# ${arch}: d logprob / d step: autograd ${analytic.toFixed(6)}, finite difference ${fd.toFixed(6)}`);
    assert.ok(Math.abs(fd - analytic) <= 2e-2 * Math.abs(analytic) + 1e-3 /* float32 round-off of the difference quotient */, `directional derivative ${analytic} vs finite difference ${fd}`);
    zero.dispose();
  });
}

// The fast trace reuses the corrupted run's keys/values (rotated keys for rotary models,
// grouped kv heads for GQA), runs the top block for the last position only and skips
// restorations that cannot change the answer: on every layout it must equal the naive trace.
for (const arch of ARCH_DIRS) {
  test(`archs/${arch}: fast causal trace equals the naive one (all kinds, severed paths)`, async () => {
    const m = await archModel(arch);
    const ids = readJson<{ cases: Case[] }>(path.join(ARCHS, arch, 'golden.json')).cases[1].ids;
    const samples = 2;
    const range: [number, number] = [1, 3];
    const d = m.config.dModel;
    const noise = new Float32Array(samples * (range[1] - range[0]) * d);
    let s = 12345;
    for (let i = 0; i < noise.length; i++) {
      s = (s * 1103515245 + 12345) % 2147483648;
      noise[i] = (s / 2147483648 - 0.5) * 2;
    }
    const p: Prepared = {
      model: m,
      prompt: '',
      subject: '',
      ids,
      range,
      samples,
      window: 2,
      kinds: ['hidden', 'mlp', 'attn'],
      sever: ['mlp', 'attn'],
      scale: 1,
      scaleSource: 'given',
      noise,
      expectedId: null,
    };
    const list = restorations(p);
    const fast = await traceFast(p, list, new Job());
    const naive = await traceNaive(p, list, new Job());
    assert.equal(fast.answerId, naive.answerId);
    assert.ok(Math.abs(fast.corruptedProb - naive.corruptedProb) < 1e-6);
    let worst = 0;
    fast.scores.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - naive.scores[i]))));
    assert.ok(worst < 1e-5, `${arch}: max |fast − naive| ${worst}`);
    assert.ok(fast.tokenLayers < naive.tokenLayers, `${arch}: work ${fast.tokenLayers} vs ${naive.tokenLayers}`);
  });
}
