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

/**
 * Output positions side by side: column c of every output row is the run of `lengths[c]`
 * positions its piece names. assembleRows is the one-column case.
 */
interface AssembleAttrs {
  /** Per column, [src, row, pos] per output row, flattened; src indexes the kernel's inputs. */
  columns: number[][];
  lengths: number[];
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
  const { columns, lengths } = args.attrs as unknown as AssembleAttrs;
  const sources = Object.keys(args.inputs)
    .sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)))
    .map((k) => args.inputs[k]!);
  let d = 0;
  columns.forEach((pieces, c) => (d = check(sources, pieces, lengths[c])));
  const rows = columns[0].length / 3;
  const width = lengths.reduce((a, b) => a + b, 0);
  const backend = args.backend as WasmBackendLike;
  const out = backend.makeOutput([rows, width, d], 'float32');
  // Views after the output's allocation: a heap growth detaches earlier ones.
  const y = heapView(backend, out);
  const views = sources.map((s) => heapView(backend, s));
  let offset = 0;
  columns.forEach((pieces, c) => {
    const run = lengths[c] * d;
    for (let i = 0; i < pieces.length; i += 3) {
      const s = sources[pieces[i]];
      const from = (pieces[i + 1] * s.shape[1] + pieces[i + 2]) * d;
      y.set(views[pieces[i]].subarray(from, from + run), ((i / 3) * width) * d + offset);
    }
    offset += run;
  });
  return out;
}

function kernelReady(): boolean {
  if (tf.getBackend() !== 'wasm') return false;
  if (!tf.getKernel(KERNEL, 'wasm')) {
    tf.registerKernel({ kernelName: KERNEL, backendName: 'wasm', kernelFunc: assembleKernel as unknown as tf.KernelFunc });
  }
  return true;
}

/** One column of assembleColumns: its pieces (one per output row) and their run length. */
export interface Column {
  sources: tf.Tensor3D[];
  pieces: RowPiece[];
  length: number;
}

/**
 * Columns of positions side by side: the same as tf.concat(columns.map((c) =>
 * assembleRows(c.sources, c.pieces, c.length)), 1), but on the WASM backends one pass that writes
 * each run once into the output (the fast trace's shortcut rows: position t from the block's
 * output, the later ones from the corrupted cache, where tf.tile + tf.concat cost ~5% of a
 * GPT-2-small trace).
 */
export function assembleColumns(columns: Column[]): tf.Tensor3D {
  if (columns.length === 0) throw new Error('assembleColumns: no columns');
  const rows = columns[0].pieces.length;
  columns.forEach((c, i) => {
    if (c.pieces.length !== rows) throw new Error(`assembleColumns: column ${i} has ${c.pieces.length} pieces, column 0 has ${rows}`);
  });
  if (!kernelReady()) {
    return tf.tidy(() => {
      const parts = columns.map((c) => assembleRows(c.sources, c.pieces, c.length));
      return parts.length === 1 ? parts[0] : (tf.concat(parts, 1) as tf.Tensor3D);
    });
  }
  // The kernel's inputs: every distinct source once, pieces renumbered into that list.
  const all: tf.Tensor3D[] = [];
  const flat = columns.map((c) =>
    c.pieces.flatMap((p) => {
      const s = c.sources[p.src];
      if (!s) throw new Error(`assembleRows: piece source ${p.src} does not exist`);
      let k = all.indexOf(s);
      if (k < 0) k = all.push(s) - 1;
      return [k, p.row, p.pos];
    }),
  );
  const inputs: tf.NamedTensorMap = {};
  all.forEach((s, i) => (inputs[`s${i}`] = s));
  const attrs: AssembleAttrs = { columns: flat, lengths: columns.map((c) => c.length) };
  return tf.engine().runKernel(KERNEL, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor3D;
}

export function assembleRows(sources: tf.Tensor3D[], pieces: RowPiece[], length: number): tf.Tensor3D {
  if (kernelReady()) return assembleColumns([{ sources, pieces, length }]);
  check(sources, pieces.flatMap((p) => [p.src, p.row, p.pos]), length);
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
