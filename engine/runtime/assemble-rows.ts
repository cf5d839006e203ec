/**
 * Rows assembled from pieces of other tensors: the output [P, length, d] has as its row i
 * `sources[p.src][p.row, p.pos : p.pos + length, :]` for the i-th piece p.
 *
 * The fast trace builds every batched block call's input this way (each node continues its
 * parent's rows or starts from the corrupted cache at position t). As tf.concat + tf.gather
 * that cost a quarter of a GPT-2-small trace: WASM's Gather kernel moves one float at a time
 * (~50 ns each, ~40M floats per trace). Each piece is one contiguous run of length·d floats, so
 * on the WASM backends a kernel copies the runs between heap views (memcpy speed); other
 * backends get the same result from slice, concat and gather.
 */
import * as tf from '@tensorflow/tfjs-core';
import { heapView, type WasmBackendLike } from './native/matmul-kernel.js';

export interface RowPiece {
  /** Index into the sources. */
  src: number;
  /** Row (first axis) of that source. */
  row: number;
  /** First position (second axis) of the run. */
  pos: number;
}

const KERNEL = 'FactLensAssembleRows';

interface AssembleAttrs {
  /** [src, row, pos] per piece, flattened. */
  pieces: number[];
  length: number;
}

function check(sources: tf.TensorInfo[], pieces: number[], length: number): number {
  if (sources.length === 0) throw new Error('assembleRows: no sources');
  const d = sources[0].shape[2];
  for (const s of sources) {
    if (s.shape.length !== 3 || s.shape[2] !== d || s.dtype !== 'float32') {
      throw new Error(`assembleRows: sources must be float32 [rows, positions, ${d}], got ${s.dtype} [${s.shape.join(', ')}]`);
    }
  }
  for (let i = 0; i < pieces.length; i += 3) {
    const s = sources[pieces[i]];
    const [row, pos] = [pieces[i + 1], pieces[i + 2]];
    if (!s || row < 0 || row >= s.shape[0] || pos < 0 || pos + length > s.shape[1]) {
      throw new Error(`assembleRows: piece ${i / 3} (source ${pieces[i]}, row ${row}, positions ${pos}..${pos + length - 1}) is outside its source`);
    }
  }
  return d;
}

function assembleKernel(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const { pieces, length } = args.attrs as unknown as AssembleAttrs;
  const sources = Object.keys(args.inputs)
    .sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)))
    .map((k) => args.inputs[k]!);
  const d = check(sources, pieces, length);
  const backend = args.backend as WasmBackendLike;
  const run = length * d;
  const out = backend.makeOutput([pieces.length / 3, length, d], 'float32');
  // Views after the output's allocation: a heap growth detaches earlier ones.
  const y = heapView(backend, out);
  const views = sources.map((s) => heapView(backend, s));
  for (let i = 0; i < pieces.length; i += 3) {
    const s = sources[pieces[i]];
    const from = (pieces[i + 1] * s.shape[1] + pieces[i + 2]) * d;
    y.set(views[pieces[i]].subarray(from, from + run), (i / 3) * run);
  }
  return out;
}

function kernelReady(): boolean {
  if (tf.getBackend() !== 'wasm') return false;
  if (!tf.getKernel(KERNEL, 'wasm')) {
    tf.registerKernel({ kernelName: KERNEL, backendName: 'wasm', kernelFunc: assembleKernel as unknown as tf.KernelFunc });
  }
  return true;
}

export function assembleRows(sources: tf.Tensor3D[], pieces: RowPiece[], length: number): tf.Tensor3D {
  const flat = pieces.flatMap((p) => [p.src, p.row, p.pos]);
  if (kernelReady()) {
    const inputs: tf.NamedTensorMap = {};
    sources.forEach((s, i) => (inputs[`s${i}`] = s));
    return tf.engine().runKernel(KERNEL, inputs, { pieces: flat, length } as unknown as tf.NamedAttrMap) as tf.Tensor3D;
  }
  check(sources, flat, length);
  return tf.tidy(() => {
    // One slice per (source, first position), concatenated, then one gather of the rows.
    const slices: tf.Tensor3D[] = [];
    const base = new Map<string, number>();
    let rows = 0;
    const idx = pieces.map((p) => {
      const key = `${p.src}:${p.pos}`;
      let at = base.get(key);
      if (at === undefined) {
        const s = sources[p.src];
        slices.push(tf.slice(s, [0, p.pos, 0], [-1, length, -1]));
        at = rows;
        base.set(key, at);
        rows += s.shape[0];
      }
      return at + p.row;
    });
    const all = slices.length === 1 ? slices[0] : (tf.concat(slices, 0) as tf.Tensor3D);
    return tf.gather(all, tf.tensor1d(idx, 'int32')) as tf.Tensor3D;
  });
}
