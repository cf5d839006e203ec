/**
 * Whole blocks as onnxruntime graphs (engine/runtime/native/block.ts) against the tfjs ops of
 * decoder-forward.ts, in one process on the real tinyworld model: padded batches, a per-row KV
 * cache (generation), the fast trace's shared past and top-block-only pass, hooks that split a
 * block at each inner site, hooks that declare nothing, gradients (the path stands aside) and
 * architectures it does not cover. Skipped where onnxruntime-node cannot load.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { probeBackends, selectBackend } from '../engine/runtime/backend.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch } from '../engine/runtime/batch.js';
import { interventionHook } from '../engine/runtime/interventions.js';
import { site, type Hook } from '../engine/runtime/sites.js';
import { nativeBlockStats, setNativeBlock, setNativePrepack } from '../engine/runtime/native/block.js';
import { disposeModel, loadModel, type LoadedModel } from '../engine/model/load.js';
import { trace } from '../engine/trace/index.js';
import { tidyData } from '../engine/util/scope.js';
import { maxAbsDiff } from './helpers/golden.js';
import * as path from 'node:path';
import { ARCHS } from './helpers/golden.js';

const status = probeBackends().find((b) => b.name === 'native')!;
const skip = status.available ? false : `native backend unavailable: ${status.reason}`;

let tiny: Promise<LoadedModel> | null = null;
async function model(): Promise<LoadedModel> {
  await selectBackend('native');
  tiny ??= loadModel({ backend: 'native' });
  return tiny;
}

/** fn with the native block on and off; the number of native blocks and graph runs it took. */
function both<T>(fn: () => T): { ops: T; native: T; blocks: number; runs: number } {
  const prev = setNativeBlock(false);
  try {
    const before = nativeBlockStats.blocks;
    const ops = fn();
    assert.equal(nativeBlockStats.blocks, before, 'switched off: no native block ran');
    setNativeBlock(true);
    const b0 = nativeBlockStats.blocks;
    const r0 = nativeBlockStats.graphRuns;
    const native = fn();
    return { ops, native, blocks: nativeBlockStats.blocks - b0, runs: nativeBlockStats.graphRuns - r0 };
  } finally {
    setNativeBlock(prev);
  }
}

test('a padded batch: logits at every position equal the tfjs ops, one graph per block', { skip }, async () => {
  const m = await model();
  const rows = [m.tokenizer.encode('The capital of France is'), m.tokenizer.encode('Paris'), m.tokenizer.encode('The Eiffel Tower is located in the city of')];
  const batch = padBatch(rows);
  const pairs: Array<[number, number]> = [];
  for (let r = 0; r < rows.length; r++) for (let p = 0; p < batch.width; p++) if (batch.mask[r][p]) pairs.push([r, p]);
  const r = both(() => tidyData(() => forward(m, batch, { logitsAt: pairs }).logits!));
  assert.equal(r.blocks, m.config.nLayer);
  assert.equal(r.runs, m.config.nLayer, 'no hook: each block is one graph run');
  assert.ok(maxAbsDiff(r.native, r.ops) < 2e-4, `max |Δ| ${maxAbsDiff(r.native, r.ops)}`);
});

test('plain passes with the weights packed into the graph: same logits, bit-reproducible, repacked when an edit replaces a weight', { skip }, async () => {
  await model();
  // A model of its own, so that what is packed is this test's doing.
  const m = await loadModel({ backend: 'native' });
  const batch = padBatch([m.tokenizer.encode('The capital of France is'), m.tokenizer.encode('Rome is the capital of')]);
  const run = () => tidyData(() => forward(m, batch, { logitsAt: [[0, 4], [1, 4]] }).logits!);
  const prev = setNativePrepack(false);
  try {
    const shared = run();
    setNativePrepack(true);
    const before = nativeBlockStats.packedBuilds;
    assert.deepEqual(Array.from(run()), Array.from(shared), "tinyworld's 3 MB blocks are below the size floor: not packed");
    assert.equal(nativeBlockStats.packedBuilds, before);
    // Past the size floor (as GPT-2-small's 28 MB blocks are), every plain pass is packed from the first.
    setNativePrepack('any-size');
    const packed = run();
    assert.equal(nativeBlockStats.packedBuilds - before, m.config.nLayer, 'the first plain pass packs every block');
    assert.ok(maxAbsDiff(packed, shared) < 2e-5, `packed vs shared graphs: max |Δ| ${maxAbsDiff(packed, shared)}`);
    assert.deepEqual(Array.from(run()), Array.from(packed), 'the next pass gives the same bits');
    assert.equal(nativeBlockStats.packedBuilds - before, m.config.nLayer, 'each block packed once');
    // An edit replaces the MLP output matrix (edit/state.ts rebuildLayer): that block is packed anew.
    const blk = m.weights.blocks[4];
    const original = blk.mlpOut.w;
    blk.mlpOut.w = tf.keep(tf.mul(original, 1.5)) as tf.Tensor2D;
    try {
      const edited = run();
      assert.equal(nativeBlockStats.packedBuilds - before, m.config.nLayer + 1, 'only the edited block is packed anew');
      setNativeBlock(false);
      const editedOps = run();
      setNativeBlock(true);
      assert.ok(maxAbsDiff(edited, editedOps) < 2e-4, `edited: packed vs tfjs ops max |Δ| ${maxAbsDiff(edited, editedOps)}`);
      assert.ok(maxAbsDiff(edited, packed) > 1e-3, 'the edit changed the logits');
    } finally {
      blk.mlpOut.w.dispose();
      blk.mlpOut.w = original;
    }
    assert.deepEqual(Array.from(run()), Array.from(packed), 'the original weights back: the original bits');
  } finally {
    setNativePrepack(prev);
    disposeModel(m);
  }
});

test('generation with a per-row KV cache: the next step and the returned keys/values match', { skip }, async () => {
  const m = await model();
  const first = padBatch([m.tokenizer.encode('The capital of'), m.tokenizer.encode('Paris is the capital of')]);
  const step = padBatch([[m.tokenizer.encode(' France')[0]], [m.tokenizer.encode(' France')[0]]]);
  const run = () =>
    tf.tidy(() => {
      const a = forward(m, first, { returnKV: true });
      const b = forward(m, step, { past: { kv: a.kv!, mask: a.keyMask! }, returnKV: true });
      return [b.logits!, b.kv![2].k, b.kv![m.config.nLayer - 1].v] as tf.Tensor[];
    });
  const r = both(() => {
    const ts = run();
    const out = ts.map((t) => t.dataSync() as Float32Array);
    tf.dispose(ts);
    return out;
  });
  assert.equal(r.blocks, 2 * m.config.nLayer);
  for (let i = 0; i < 3; i++) assert.ok(maxAbsDiff(r.native[i], r.ops[i]) < 2e-4, `output ${i}: max |Δ| ${maxAbsDiff(r.native[i], r.ops[i])}`);
});

test('hooks at the inner sites split the block; reads and replacements act exactly as on the tfjs ops', { skip }, async () => {
  const m = await model();
  const batch = padBatch([m.tokenizer.encode('The capital of France is'), m.tokenizer.encode('Rome is in')]);
  const d = m.config.dModel;
  const l = 3;
  const cases: Array<{ what: string; sites: string[]; runs: number }> = [
    { what: 'attention output', sites: [site.attnOut(l)], runs: 2 },
    { what: 'MLP activation', sites: [site.mlpPost(l)], runs: 2 },
    { what: 'MLP output', sites: [site.mlpOut(l)], runs: 2 },
    { what: 'all three', sites: [site.attnOut(l), site.mlpPost(l), site.mlpOut(l)], runs: 4 },
    { what: 'block edges only', sites: [site.residPre(l), site.residPost(l)], runs: 1 },
  ];
  for (const c of cases) {
    const r = both(() => {
      const reads = new Map<string, tf.Tensor3D>();
      const logits = tf.tidy(() => {
        const ivs = c.sites.flatMap((s) => {
          const width = s === site.mlpPost(l) ? m.config.dMlp : d;
          return [
            { site: s, op: 'replace' as const, rows: [1], positions: [1], value: tf.fill([width], 0.25) },
            { site: s, op: 'read' as const },
          ];
        });
        const out = forward(m, batch, { hook: interventionHook(ivs, reads), logitsAt: [[0, 4], [1, 2]] }).logits!;
        for (const t of reads.values()) tf.keep(t);
        return out;
      });
      const got = { logits: logits.dataSync() as Float32Array, reads: [...reads.values()].map((t) => t.dataSync() as Float32Array) };
      tf.dispose([logits, ...reads.values()]);
      return got;
    });
    assert.equal(r.runs, m.config.nLayer - 1 + c.runs, `${c.what}: graph runs`);
    assert.ok(maxAbsDiff(r.native.logits, r.ops.logits) < 2e-4, `${c.what}: logits max |Δ| ${maxAbsDiff(r.native.logits, r.ops.logits)}`);
    assert.equal(r.native.reads.length, c.sites.length);
    r.native.reads.forEach((x, i) => assert.ok(maxAbsDiff(x, r.ops.reads[i]) < 2e-4, `${c.what}: read ${c.sites[i]}`));
  }
});

test('a hook that declares no sites splits every block at every site and changes nothing', { skip }, async () => {
  const m = await model();
  const batch = padBatch([m.tokenizer.encode('The capital of France is')]);
  const seen: string[] = [];
  const hook: Hook = (s, x) => {
    seen.push(s);
    return s === site.mlpOut(5) ? (tf.mul(x, 0.5) as tf.Tensor3D) : x;
  };
  const r = both(() => {
    seen.length = 0;
    const out = tidyData(() => forward(m, batch, { hook }).logits!);
    return { out, seen: [...seen] };
  });
  assert.deepEqual(r.native.seen, r.ops.seen, 'the hook sees the same sites in the same order');
  assert.equal(r.runs, 4 * m.config.nLayer);
  assert.ok(maxAbsDiff(r.native.out, r.ops.out) < 2e-4, `max |Δ| ${maxAbsDiff(r.native.out, r.ops.out)}`);
});

test('the fast and the naive trace (shared past, top block for the last position) give the same scores', { skip }, async () => {
  const m = await model();
  for (const method of ['fast', 'naive'] as const) {
    const runs: Array<Awaited<ReturnType<typeof trace>>> = [];
    const prev = setNativeBlock(false);
    try {
      runs.push(await trace(m, 'The Eiffel Tower is located in the city of', { subject: 'Eiffel Tower', samples: 4, seed: 3, method }));
      setNativeBlock(true);
      const before = nativeBlockStats.blocks;
      runs.push(await trace(m, 'The Eiffel Tower is located in the city of', { subject: 'Eiffel Tower', samples: 4, seed: 3, method }));
      assert.ok(nativeBlockStats.blocks > before, `${method}: native blocks ran`);
    } finally {
      setNativeBlock(prev);
    }
    for (const k of runs[0].kinds) {
      const a = runs[0].scores[k]!.flat();
      const b = runs[1].scores[k]!.flat();
      assert.ok(maxAbsDiff(Float32Array.from(b), Float32Array.from(a)) < 1e-5, `${method} ${k}: max |Δ| ${maxAbsDiff(Float32Array.from(b), Float32Array.from(a))}`);
    }
  }
});

test('under a gradient tape the tfjs ops run, and the gradient is the same', { skip }, async () => {
  const m = await model();
  const batch = padBatch([m.tokenizer.encode('The capital of France is')]);
  const delta = tf.zeros([m.config.dModel]);
  const before = nativeBlockStats.blocks;
  const g = tf.grad((x: tf.Tensor) => {
    const hook = interventionHook([{ site: site.mlpOut(2), op: 'add', positions: [3], value: x }]);
    return tf.sum(forward(m, batch, { hook }).logits!);
  })(delta);
  assert.equal(nativeBlockStats.blocks, before, 'no native block under the tape');
  assert.ok(Number.isFinite(tidyData(() => tf.sum(g))[0]));
  tf.dispose([delta, g]);
});

test('architectures the graph does not cover run the tfjs ops (rotary, parallel, gated, grouped-query)', { skip }, async () => {
  await selectBackend('native');
  for (const arch of ['gptj', 'gpt-neox', 'llama', 'qwen2']) {
    const m = await loadModel({ dir: path.join(ARCHS, arch), backend: 'native', withoutTokenizer: true });
    const before = nativeBlockStats.blocks;
    tidyData(() => forward(m, padBatch([[1, 2, 3, 4]])).logits!);
    assert.equal(nativeBlockStats.blocks, before, `${arch}: no native block`);
    disposeModel(m);
  }
});
