/**
 * The edit state of a loaded model: the records applied so far (in order) and the original
 * tensors of every matrix an edit touched. The weights of an edited layer are always
 * recomputed as W_l = W0_l + Σ deltas (in application order) from the kept original, so
 * reverting any edit is exact, and reverting all of them puts the very original tensors back
 * (bit-identical logits).
 *
 * Only the MLP output matrix (and, for dense deltas, its bias) of a layer is ever touched.
 * New tensors replace the old ones (tfjs tensors are immutable; a fresh tensor also keeps
 * the WASM backend's packed-weight cache, which is keyed by tensor, correct).
 */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import type { DecoderModel } from '../runtime/decoder-forward.js';
import type { EditRecord, WeightDelta } from './types.js';

interface Original {
  w: tf.Tensor2D;
  b?: tf.Tensor1D;
  wHost?: Float32Array;
  bHost?: Float32Array;
}

export interface EditState {
  records: EditRecord[];
  originals: Map<number, Original>;
}

const states = new WeakMap<object, EditState>();

export function editState(model: LoadedModel | DecoderModel): EditState {
  let s = states.get(model);
  if (!s) {
    s = { records: [], originals: new Map() };
    states.set(model, s);
  }
  return s;
}

export function hasEdits(model: LoadedModel | DecoderModel): boolean {
  return (states.get(model)?.records.length ?? 0) > 0;
}

/**
 * The unedited model as a view: the same config and weights object except that every edited
 * layer's MLP output matrix (and bias) is the kept original. Shares all tensors; nothing to
 * dispose. Used for what the reference computes on the unedited model (context templates,
 * second-moment statistics).
 */
export function baseModel<T extends DecoderModel>(model: T): DecoderModel {
  const s = states.get(model);
  if (!s || s.originals.size === 0) return model;
  const blocks = model.weights.blocks.map((blk, l) => {
    const o = s.originals.get(l);
    return o ? { ...blk, mlpOut: { w: o.w, b: o.b } } : blk;
  });
  return { config: model.config, weights: { ...model.weights, blocks } };
}

function decodeF32(b64: string, n: number, what: string): Float32Array {
  const buf = Buffer.from(b64, 'base64');
  if (buf.byteLength !== n * 4) {
    throw new FactLensError('INVALID_ARGUMENT', `${what}: expected ${n} float32 values, got ${buf.byteLength} bytes`, {
      field: 'deltas',
    });
  }
  const out = new Float32Array(n);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

export function encodeF32(data: Float32Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64');
}

/** Checks a delta against the model's shapes (layer range, vector lengths). */
export function checkDelta(model: DecoderModel, d: WeightDelta, where: string): void {
  const { nLayer, dMlp: f, dModel: dm } = model.config;
  if (!Number.isInteger(d.layer) || d.layer < 0 || d.layer >= nLayer) {
    throw new FactLensError('INVALID_ARGUMENT', `${where}: layer ${d.layer} is outside 0..${nLayer - 1}`, { field: 'layer' });
  }
  if (d.kind === 'rank-one') {
    if (d.u.length !== f || d.v.length !== dm) {
      throw new FactLensError('INVALID_ARGUMENT', `${where}: rank-one delta needs u of ${f} and v of ${dm} values`, { field: 'deltas' });
    }
  } else if (d.kind === 'dense') {
    if (d.shape[0] !== f || d.shape[1] !== dm) {
      throw new FactLensError('INVALID_ARGUMENT', `${where}: dense delta has shape [${d.shape}], the matrix is [${f}, ${dm}]`, {
        field: 'deltas',
      });
    }
  } else {
    throw new FactLensError('INVALID_ARGUMENT', `${where}: unknown delta kind '${(d as { kind: string }).kind}'`, { field: 'deltas' });
  }
}

/**
 * Recomputes layer l from its original and every delta of the current records touching it,
 * in record order. With no delta left, the original tensors are put back and forgotten.
 */
export function rebuildLayer(model: DecoderModel, l: number): void {
  const s = editState(model);
  const blk = model.weights.blocks[l];
  const deltas = s.records.flatMap((r) => r.deltas.filter((d) => d.layer === l));
  let o = s.originals.get(l);
  if (deltas.length === 0) {
    if (!o) return;
    if (blk.mlpOut.w !== o.w) blk.mlpOut.w.dispose();
    if (blk.mlpOut.b && blk.mlpOut.b !== o.b) blk.mlpOut.b.dispose();
    blk.mlpOut.w = o.w;
    blk.mlpOut.b = o.b;
    s.originals.delete(l);
    return;
  }
  if (!o) {
    o = { w: blk.mlpOut.w, b: blk.mlpOut.b };
    s.originals.set(l, o);
  }
  const [f, dm] = o.w.shape;
  o.wHost ??= (o.w.dataSync() as Float32Array).slice();
  const w = o.wHost.slice();
  let bias: Float32Array | null = null;
  for (const d of deltas) {
    if (d.kind === 'rank-one') {
      // Each element is rounded to float32 once per delta: w + u_i·v_j evaluated in float64.
      for (let i = 0; i < f; i++) {
        const ui = d.u[i];
        if (ui === 0) continue;
        const r = i * dm;
        for (let j = 0; j < dm; j++) w[r + j] += ui * d.v[j];
      }
    } else {
      const dw = decodeF32(d.delta, f * dm, `dense delta at layer ${l}`);
      for (let i = 0; i < w.length; i++) w[i] += dw[i];
      if (d.biasDelta) {
        if (!o.b) throw new FactLensError('INVALID_ARGUMENT', `layer ${l} has no MLP output bias to add a delta to`, { field: 'deltas' });
        o.bHost ??= (o.b.dataSync() as Float32Array).slice();
        bias ??= o.bHost.slice();
        const db = decodeF32(d.biasDelta, dm, `bias delta at layer ${l}`);
        for (let j = 0; j < dm; j++) bias[j] += db[j];
      }
    }
  }
  const next = tf.tensor2d(w, [f, dm]);
  if (blk.mlpOut.w !== o.w) blk.mlpOut.w.dispose();
  blk.mlpOut.w = next;
  const nextB = bias ? tf.tensor1d(bias) : o.b;
  if (blk.mlpOut.b && blk.mlpOut.b !== o.b && blk.mlpOut.b !== nextB) blk.mlpOut.b.dispose();
  blk.mlpOut.b = nextB;
}
