/**
 * A whole transformer block as onnxruntime graphs, for forward passes on the native backend.
 *
 * With products already at numpy's speed (matmul-kernel.ts), what kept the engine's forward
 * below a plain numpy GPT-2 was the per-op work between them: each of the ~25 tfjs ops of a
 * block (q/k/v split, head reshapes and transposes, scale, mask, softmax, residual adds) is a
 * WASM kernel call with its own allocation and a pass over memory. Here the block is one
 * session run: LayerNorm → q|k|v → heads → masked softmax over past + new keys → output
 * projection → residual → LayerNorm → MLP → residual, with onnxruntime's fused kernels
 * (FusedMatMul with the 1/√dh scale folded in, FastGelu with its bias) and no tfjs op between.
 *
 * Activation sites inside the block (hook_attn_out, mlp.hook_post, hook_mlp_out) split the
 * graph where a hook acts on them: the block runs as up to four graphs (attention; residual +
 * LayerNorm + MLP in; MLP out; residual) with the hook called between them on ordinary tfjs
 * tensors, so interventions, reads and restorations keep their exact semantics. Which sites a
 * hook acts on comes from sites.ts's declarations (interventionHook declares its own);
 * hook_resid_pre and hook_resid_post sit at the block's edges and never split it.
 *
 * Only GPT-2-style blocks take this path (LayerNorm with bias, biases on every product,
 * learned or no positions, sequential attention then MLP, one key/value head per query head,
 * gelu_new / gelu / relu) and only outside a gradient tape; everything else runs the tfjs ops
 * of decoder-forward.ts, which stay the reference (tests compare the two).
 * FACTLENS_NATIVE_BLOCK=0 turns it off for comparisons.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { BlockWeights, DecoderConfig } from '../../model/decoder.js';
import { hookTouches, site, type Hook } from '../sites.js';
import { heapView, nativeMatMulInstalled, type WasmBackendLike } from './matmul-kernel.js';
import { isHostWeight } from './host-weights.js';
import { SLICE_TO_END, type GraphNode, type Initializer, type ValueInfo } from './onnx-graph.js';
import { NativeGraph, nativeThreads, ortTensor, threadsForFlops, type OrtTensor } from './ort.js';
import { gradientTapeOn } from '../../util/scope.js';
// Type only: decoder-forward.ts calls this module.
import type { KV } from '../decoder-forward.js';

/** How the block's keys meet earlier ones: none, concatenated per row, or shared by groups of rows (causal tracing). */
type PastKind = 'none' | 'concat' | 'shared';
type Stage = 'attn' | 'mlpIn' | 'mlpOut' | 'res';
const STAGES: Stage[] = ['attn', 'mlpIn', 'mlpOut', 'res'];
/** The site a stage's result is, where a hook may act after it. */
const STAGE_SITE: Record<Stage, ((l: number) => string) | null> = { attn: site.attnOut, mlpIn: site.mlpPost, mlpOut: site.mlpOut, res: null };
/** The tensor each stage hands on. */
const STAGE_RESULT: Record<Stage, string> = { attn: 'attn_out', mlpIn: 'post', mlpOut: 'mlp_out', res: 'out' };

interface Variant {
  d: number;
  heads: number;
  dh: number;
  eps: number;
  act: 'gelu_new' | 'gelu' | 'relu';
  past: PastKind;
  lastOnly: boolean;
}

interface Node extends GraphNode {
  stage: Stage;
}

/**
 * Every node of the block for one variant, tagged with its stage, with the rank of each
 * tensor it names (inputs and outputs need a rank for their value info). Rows are 2-D
 * [B·T, width] so that every product is a Gemm with its bias folded in; `h` is the block input
 * as rows and `h3` the same memory as [B, T, d] (for the last position's slice). Other names:
 * bias ([Bb, 1, Tq, Tk] additive mask), past_k/past_v, weights w_* / b_*, results attn_out,
 * hres (residual at the query positions), h1, post, mlp_out, out, k_out, v_out. Run-dependent
 * shapes come in as int64 inputs (sh_*).
 */
function blockNodes(v: Variant): { nodes: Node[]; inits: Initializer[]; rank: Map<string, number> } {
  const nodes: Node[] = [];
  const inits: Initializer[] = [];
  const rank = new Map<string, number>();
  const { d, heads, dh } = v;
  const add = (stage: Stage, op: string, inputs: string[], outputs: string[], r: number, extra: Partial<GraphNode> = {}) => {
    nodes.push({ stage, op, inputs, outputs, ...extra });
    for (const o of outputs) rank.set(o, r);
  };
  const constant = (name: string, values: number[]) => {
    if (!inits.some((i) => i.name === name)) inits.push({ name, type: 'int64', dims: [values.length], values });
    return name;
  };
  const gemm = (stage: Stage, x: string, w: string, b: string, out: string) => add(stage, 'Gemm', [x, w, b], [out], 2);
  for (const [n, r] of [['h', 2], ['h3', 3], ['bias', 4], ['past_k', 4], ['past_v', 4]] as const) rank.set(n, r);
  for (const n of ['sh_kv4', 'sh_q4', 'sh_q5', 'sh_s4', 'sh_split', 'sh_p5', 'sh_c4']) rank.set(n, 1);
  for (const n of ['ln1_g', 'ln1_b', 'ln2_g', 'ln2_b', 'b_qkv', 'b_q', 'b_k', 'b_v', 'b_o', 'b_in', 'b_out']) rank.set(n, 1);
  for (const n of ['w_qkv', 'w_q', 'w_k', 'w_v', 'w_o', 'w_in', 'w_out']) rank.set(n, 2);
  const rows = constant('c_rows', [-1, heads * dh]);
  const alpha = { float: 1 / Math.sqrt(dh) };
  const last = () => [constant('c_last_start', [-1]), constant('c_last_end', [SLICE_TO_END])];

  // Attention.
  add('attn', 'LayerNormalization', ['h', 'ln1_g', 'ln1_b'], ['ln1'], 2, { attrs: { axis: -1, epsilon: { float: v.eps } } });
  if (v.lastOnly) {
    // Keys and values for every position, the query (and so everything after) for the last one.
    add('attn', 'Reshape', ['ln1', 'sh_h3'], ['ln1_3'], 3);
    add('attn', 'Slice', ['ln1_3', ...last(), constant('c_axis1', [1])], ['ln1_last3'], 3);
    add('attn', 'Reshape', ['ln1_last3', rows], ['ln1_last'], 2);
    gemm('attn', 'ln1_last', 'w_q', 'b_q', 'q');
    gemm('attn', 'ln1', 'w_k', 'b_k', 'k');
    gemm('attn', 'ln1', 'w_v', 'b_v', 'v');
    add('attn', 'Slice', ['h3', ...last(), 'c_axis1'], ['hres3'], 3);
    add('attn', 'Reshape', ['hres3', rows], ['hres'], 2);
    add('attn', 'Slice', ['bias', ...last(), constant('c_axis2', [2])], ['bias_q'], 4);
    rank.set('sh_h3', 1);
  } else {
    gemm('attn', 'ln1', 'w_qkv', 'b_qkv', 'qkv');
    add('attn', 'Split', ['qkv', constant('c_split_qkv', [d, d, d])], ['q', 'k', 'v'], 2, { attrs: { axis: -1 } });
  }
  const hres = v.lastOnly ? 'hres' : 'h';
  const biasQ = v.lastOnly ? 'bias_q' : 'bias';
  // Keys and values leave the graph as the cache holds them, [B, H, T, dh] (past included for a per-row past).
  const kNew = v.past === 'concat' ? 'kh' : 'k_out';
  const vNew = v.past === 'concat' ? 'vh' : 'v_out';
  add('attn', 'Reshape', ['q', v.lastOnly ? 'sh_q4' : 'sh_kv4'], ['q4'], 4);
  add('attn', 'Transpose', ['q4'], ['qh'], 4, { attrs: { perm: [0, 2, 1, 3] } });
  add('attn', 'Reshape', ['k', 'sh_kv4'], ['k4'], 4);
  add('attn', 'Transpose', ['k4'], [kNew], 4, { attrs: { perm: [0, 2, 1, 3] } });
  add('attn', 'Reshape', ['v', 'sh_kv4'], ['v4'], 4);
  add('attn', 'Transpose', ['v4'], [vNew], 4, { attrs: { perm: [0, 2, 1, 3] } });
  const scaledDot = (a: string, b: string, out: string, r: number) =>
    add('attn', 'FusedMatMul', [a, b], [out], r, { domain: 'com.microsoft', attrs: { transA: 0, transB: 1, alpha } });
  if (v.past === 'shared') {
    // Rows are group-major (row = group·pb + r) and every group attends to the same pb-row past:
    // the past enters the products broadcast over groups ([1, pb, H, Tp, dh]), never copied.
    // One softmax over [past | new] keys (concatenated scores), split again for the two products.
    const axis0 = constant('c_axis0', [0]);
    add('attn', 'Unsqueeze', ['past_k', axis0], ['pk5'], 5);
    add('attn', 'Unsqueeze', ['past_v', axis0], ['pv5'], 5);
    add('attn', 'Reshape', ['qh', 'sh_q5'], ['q5'], 5);
    scaledDot('q5', 'pk5', 's_past5', 5);
    add('attn', 'Reshape', ['s_past5', 'sh_s4'], ['s_past'], 4);
    scaledDot('qh', kNew, 's_new', 4);
    add('attn', 'Concat', ['s_past', 's_new'], ['s'], 4, { attrs: { axis: -1 } });
    add('attn', 'Add', ['s', biasQ], ['sb'], 4);
    add('attn', 'Softmax', ['sb'], ['p'], 4, { attrs: { axis: -1 } });
    add('attn', 'Split', ['p', 'sh_split'], ['p_past', 'p_new'], 4, { attrs: { axis: -1 } });
    add('attn', 'Reshape', ['p_past', 'sh_p5'], ['p_past5'], 5);
    add('attn', 'MatMul', ['p_past5', 'pv5'], ['c_past5'], 5);
    add('attn', 'Reshape', ['c_past5', 'sh_c4'], ['c_past'], 4);
    add('attn', 'MatMul', ['p_new', vNew], ['c_new'], 4);
    add('attn', 'Add', ['c_past', 'c_new'], ['ctx'], 4);
  } else {
    if (v.past === 'concat') {
      add('attn', 'Concat', ['past_k', 'kh'], ['k_out'], 4, { attrs: { axis: 2 } });
      add('attn', 'Concat', ['past_v', 'vh'], ['v_out'], 4, { attrs: { axis: 2 } });
    }
    scaledDot('qh', 'k_out', 's', 4);
    add('attn', 'Add', ['s', biasQ], ['sb'], 4);
    add('attn', 'Softmax', ['sb'], ['p'], 4, { attrs: { axis: -1 } });
    add('attn', 'MatMul', ['p', 'v_out'], ['ctx'], 4);
  }
  add('attn', 'Transpose', ['ctx'], ['ctx_t'], 4, { attrs: { perm: [0, 2, 1, 3] } });
  add('attn', 'Reshape', ['ctx_t', rows], ['merged'], 2);
  gemm('attn', 'merged', 'w_o', 'b_o', 'attn_out');

  // Residual, LayerNorm, MLP in.
  add('mlpIn', 'Add', [hres, 'attn_out'], ['h1'], 2);
  add('mlpIn', 'LayerNormalization', ['h1', 'ln2_g', 'ln2_b'], ['ln2'], 2, { attrs: { axis: -1, epsilon: { float: v.eps } } });
  if (v.act === 'relu') {
    gemm('mlpIn', 'ln2', 'w_in', 'b_in', 'zb');
    add('mlpIn', 'Relu', ['zb'], ['post'], 2);
  } else {
    // The bias goes with the activation: FastGelu (tanh form, gelu_new) and BiasGelu (erf form) take it.
    add('mlpIn', 'MatMul', ['ln2', 'w_in'], ['z'], 2);
    add('mlpIn', v.act === 'gelu_new' ? 'FastGelu' : 'BiasGelu', ['z', 'b_in'], ['post'], 2, { domain: 'com.microsoft' });
  }
  // MLP out, residual.
  gemm('mlpOut', 'post', 'w_out', 'b_out', 'mlp_out');
  add('res', 'Add', ['h1', 'mlp_out'], ['out'], 2);
  return { nodes, inits, rank };
}

/** One graph of consecutive stages: what it reads and what it hands on. */
interface Segment {
  stages: Stage[];
  graph: NativeGraph;
  inputs: string[];
  outputs: string[];
  /** Rank of each input and output in the graph (rows are rank 2 there, [B, T, width] in tfjs). */
  rank: Record<string, number>;
}

/** Splits the block after each stage in `cutAfter` and builds one graph per run of stages. */
function buildSegments(v: Variant, cutAfter: Set<Stage>, weights?: { values: Map<string, Initializer>; threads: number }): Segment[] {
  const { nodes, inits: consts, rank } = blockNodes(v);
  const inits = weights ? [...consts, ...weights.values.values()] : consts;
  const constants = new Set(inits.map((i) => i.name));
  const groups: Stage[][] = [[]];
  for (const s of STAGES) {
    groups[groups.length - 1].push(s);
    if (cutAfter.has(s) && s !== 'res') groups.push([]);
  }
  const info = (name: string): ValueInfo => ({ name, type: name.startsWith('sh_') ? 'int64' : 'float32', shape: Array.from({ length: rank.get(name)! }, (_, i) => `${name}_${i}`) });
  return groups.map((stages, gi) => {
    const mine = nodes.filter((n) => stages.includes(n.stage));
    const later = nodes.filter((n) => groups.slice(gi + 1).flat().includes(n.stage));
    const produced = new Set(mine.flatMap((n) => n.outputs));
    const inputs = [...new Set(mine.flatMap((n) => n.inputs))].filter((x) => !produced.has(x) && !constants.has(x));
    const needLater = new Set(later.flatMap((n) => n.inputs));
    const outputs = [...produced].filter((x) => needLater.has(x) || x === STAGE_RESULT[stages[stages.length - 1]] || x === 'k_out' || x === 'v_out');
    const used = new Set(mine.flatMap((n) => n.inputs));
    const graph = new NativeGraph(
      mine.map(({ stage: _stage, ...n }) => n),
      inputs.map(info),
      outputs.map(info),
      inits.filter((i) => used.has(i.name)),
      weights?.threads,
    );
    return { stages, graph, inputs, outputs, rank: Object.fromEntries([...inputs, ...outputs].map((x) => [x, rank.get(x)!])) };
  });
}

const segmentCache = new Map<string, Segment[]>();

function segmentsFor(v: Variant, cutAfter: Set<Stage>): Segment[] {
  const key = `${JSON.stringify(v)}|${STAGES.filter((s) => cutAfter.has(s)).join(',')}`;
  let s = segmentCache.get(key);
  if (!s) segmentCache.set(key, (s = buildSegments(v, cutAfter)));
  return s;
}

/** Counters for tests and benchmarks: block runs on this path, graph runs they took, blocks packed with their weights. */
export const nativeBlockStats = { blocks: 0, graphRuns: 0, packedBuilds: 0 };

/**
 * Blocks whose plain pass (no past, no hook inside) runs a graph that holds the block's weights
 * as initializers: the graph over every position, or, for the top block of a pass that reads
 * only the last position's logits (runtime/forward.ts), the lastOnly graph, each built on its
 * first use. onnxruntime then packs each weight matrix for MLAS once, at session build, instead
 * of on every product: with 176 rows the per-call packing of a weight
 * fed as an input is a large share of the product (GPT-2-small 11×16 forward, interleaved: best
 * 130 → 108–120 ms). The price is memory: onnxruntime keeps the weights and their packed form
 * (GPT-2-small: +546 MB resident for 340 MB of block weights) and a build per block (~85 ms for
 * GPT-2-small's, at its first plain pass). So it is decided by the model's shape alone:
 *  - blocks of at least PACK_MIN_BLOCK_BYTES (tinyworld's 3 MB blocks gain nothing measurable:
 *    19.0 vs 19.6 ms best per forward, interleaved; GPT-2-small's are 28 MB);
 *  - block weights totalling at most PACK_MAX_MODEL_BYTES (GPT-2-small; not medium and up);
 *  - never host (XL-sized) weights.
 * A packed graph's products round differently from the shared graph's in the last bits (MLAS
 * blocks K differently for prepacked weights), so the choice must not depend on history: every
 * plain pass of a qualifying block is packed from the first, and results stay bit-reproducible
 * (revert, journal replay and the edit verdict compare logits bit for bit). Edits replace weight
 * tensors (edit/state.ts), so a block whose tensors are not the ones packed is packed anew.
 * Traces do not gain (their products have thousands of rows) and keep the shared graphs.
 * FACTLENS_NATIVE_PREPACK=0 turns this off.
 */
const PACK_MIN_BLOCK_BYTES = 16 * 2 ** 20;
const PACK_MAX_MODEL_BYTES = 512 * 2 ** 20;
type PrepackMode = boolean | 'any-size';
let prepackMode: PrepackMode = process.env.FACTLENS_NATIVE_PREPACK !== '0';
interface Packed {
  tensors: tf.Tensor[];
  /** By variant: the plain pass, and the top block of a pass that reads only the last position. */
  segments: Map<'all' | 'lastOnly', Segment[]>;
}
const packed = new WeakMap<BlockWeights, Packed>();

/**
 * Turns packed plain passes on or off in this process (benchmarks, tests); 'any-size' also packs
 * blocks below the size floor (tests on tinyworld). Returns the previous setting.
 */
export function setNativePrepack(mode: PrepackMode): PrepackMode {
  const prev = prepackMode;
  prepackMode = mode;
  return prev;
}

/** Frees the packed graph of a block (the model is being disposed). */
export function disposeNativeBlock(w: BlockWeights): void {
  const hit = packed.get(w);
  if (!hit) return;
  for (const segs of hit.segments.values()) for (const s of segs) s.graph.dispose();
  packed.delete(w);
}

/** The weights of a block's graphs by graph name (the fused q|k|v: every variant but lastOnly). */
function blockWeightsByName(w: BlockWeights): Array<[string, tf.Tensor]> {
  return [
    ['ln1_g', w.ln1.g], ['ln1_b', w.ln1.b!], ['w_qkv', w.qkv.w], ['b_qkv', w.qkv.b!], ['w_o', w.o.w], ['b_o', w.o.b!],
    ['ln2_g', w.ln2!.g], ['ln2_b', w.ln2!.b!], ['w_in', w.mlpIn.w], ['b_in', w.mlpIn.b!], ['w_out', w.mlpOut.w], ['b_out', w.mlpOut.b!],
  ];
}

function packedSegments(cfg: DecoderConfig, w: BlockWeights, v: Variant, split: NativeBlockArgs['split']): Segment[] | null {
  const named = blockWeightsByName(w);
  const which = v.lastOnly ? 'lastOnly' : 'all';
  let hit = packed.get(w);
  if (hit && !hit.tensors.every((t, i) => t === named[i][1] && !t.isDisposed)) {
    disposeNativeBlock(w);
    hit = undefined;
  }
  const ready = hit?.segments.get(which);
  if (ready) return ready;
  const blockBytes = 4 * (4 * cfg.dModel * cfg.dModel + 2 * cfg.dModel * cfg.dMlp);
  if (blockBytes < PACK_MIN_BLOCK_BYTES && prepackMode !== 'any-size') return null;
  if (cfg.nLayer * blockBytes > PACK_MAX_MODEL_BYTES || named.some(([, t]) => isHostWeight(t) || t.dtype !== 'float32')) return null;
  // The lastOnly graph reads q, k and v's weights apart (the query for one position only).
  const parts: Array<[string, tf.Tensor]> = v.lastOnly ? splitWeightsByName(split()) : [];
  const values = new Map<string, Initializer>(
    [...named, ...parts].map(([name, t]) => [name, { name, type: 'float32', dims: t.shape, values: t.dataSync() as Float32Array }]),
  );
  const segments = buildSegments(v, new Set(), { values, threads: nativeThreads() });
  if (!hit) packed.set(w, (hit = { tensors: named.map(([, t]) => t), segments: new Map() }));
  hit.segments.set(which, segments);
  nativeBlockStats.packedBuilds++;
  return segments;
}

function splitWeightsByName(s: ReturnType<NativeBlockArgs['split']>): Array<[string, tf.Tensor]> {
  return [['w_q', s.q.w], ['b_q', s.q.b!], ['w_k', s.k.w], ['b_k', s.k.b!], ['w_v', s.v.w], ['b_v', s.v.b!]];
}

let enabled = process.env.FACTLENS_NATIVE_BLOCK !== '0';
/** Turns this path on or off in this process (tests and benchmarks compare both); returns the previous setting. */
export function setNativeBlock(on: boolean): boolean {
  const prev = enabled;
  enabled = on;
  return prev;
}

/** Why this block cannot run as native graphs (null: it can). */
function unsupported(cfg: DecoderConfig, w: BlockWeights): string | null {
  if (cfg.norm !== 'layernorm' || !w.ln1.b || !w.ln2?.b) return 'not LayerNorm with bias before attention and MLP';
  if (cfg.positional.kind === 'rotary') return 'rotary positions';
  if (cfg.parallel !== 'none') return 'parallel attention and MLP';
  if (cfg.gatedMlp || cfg.act === 'silu') return 'gated or SiLU MLP';
  if (cfg.nKvHead !== cfg.nHead || cfg.nHead * cfg.headDim !== cfg.dModel) return 'grouped-query attention or a head width other than d/heads';
  if (!w.qkv.b || !w.o.b || !w.mlpIn.b || !w.mlpOut.b) return 'a product without bias';
  return null;
}

interface KernelAttrs {
  segment: Segment;
  /** Output shapes by name. */
  shapes: Record<string, number[]>;
  /** Run-dependent int64 shapes: heads of the batch, and the shared past's groups. */
  extra: Record<string, number[]>;
  threads: number;
}

/** A tensor's dims as the graph sees it: rows [N, width] for rank 2, else its own shape. */
function graphDims(shape: number[], rank: number): number[] {
  if (rank !== 2 || shape.length === 2) return shape;
  const width = shape[shape.length - 1];
  return [tf.util.sizeFromShape(shape) / width, width];
}

/** Runs one segment graph on WASM tensors in place: inputs are heap views, outputs preallocated heap tensors. */
function segmentKernel({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo[] {
  const { segment, shapes, extra, threads } = attrs as unknown as KernelAttrs;
  const be = backend as WasmBackendLike;
  for (const [name, t] of Object.entries(inputs) as Array<[string, tf.TensorInfo]>) {
    if (t.dtype !== 'float32') throw new Error(`native block: input ${name} is ${t.dtype} [${t.shape.join(', ')}]; float32 expected`);
  }
  const outs = segment.outputs.map((name) => be.makeOutput(shapes[name], 'float32'));
  // Views after every allocation: a heap growth detaches earlier ones.
  const feeds: Record<string, OrtTensor> = {};
  for (const name of segment.inputs) {
    if (name in extra) feeds[name] = ortTensor('int64', new BigInt64Array(extra[name].map((x) => BigInt(x))), [extra[name].length]);
    else {
      const t = inputs[name]!;
      feeds[name] = ortTensor('float32', heapView(be, t), graphDims(t.shape, segment.rank[name]));
    }
  }
  const fetches: Record<string, OrtTensor> = {};
  segment.outputs.forEach((name, i) => (fetches[name] = ortTensor('float32', heapView(be, outs[i]), graphDims(shapes[name], segment.rank[name]))));
  segment.graph.runInPlace(feeds, fetches, threads);
  nativeBlockStats.graphRuns++;
  return outs;
}

const KERNEL = 'FactLensNativeBlockSegment';

export interface NativeBlockArgs {
  cfg: DecoderConfig;
  layer: number;
  w: BlockWeights;
  /** The fused q|k|v split into its parts (needed for lastOnly). */
  split: () => { q: { w: tf.Tensor2D; b?: tf.Tensor1D }; k: { w: tf.Tensor2D; b?: tf.Tensor1D }; v: { w: tf.Tensor2D; b?: tf.Tensor1D } };
  /** Block input after hook_resid_pre [B, T, d]. */
  h: tf.Tensor3D;
  bias: tf.Tensor4D;
  past?: KV;
  hook?: Hook;
  lastOnly: boolean;
}

/**
 * The block's output (before hook_resid_post) and its keys/values, or null where this path does
 * not apply (then the caller runs the tfjs ops). Keys/values are as decoder-forward's
 * attention returns them: past + new with a per-row past, new only with a shared one.
 */
export function nativeBlock(a: NativeBlockArgs): { h: tf.Tensor3D; kv: KV } | null {
  if (!enabled || !nativeMatMulInstalled() || tf.getBackend() !== 'wasm') return null;
  if (gradientTapeOn()) return null;
  const { cfg, w, h, bias, past, lastOnly } = a;
  if (unsupported(cfg, w) || h.dtype !== 'float32') return null;
  const [b, t, d] = h.shape;
  const heads = cfg.nHead;
  const dh = cfg.headDim;
  const pastKind: PastKind = !past ? 'none' : past.k.shape[0] === b ? 'concat' : 'shared';
  const tp = past ? past.k.shape[2] : 0;
  if (pastKind === 'shared' && b % past!.k.shape[0] !== 0) throw new Error(`shared past of ${past!.k.shape[0]} rows does not divide a batch of ${b}`);
  const tq = lastOnly ? 1 : t;
  const act = cfg.act as Variant['act'];
  const variant: Variant = { d, heads, dh, eps: cfg.normEps, act, past: pastKind, lastOnly };
  const cutAfter = new Set<Stage>(STAGES.filter((s) => STAGE_SITE[s] !== null && hookTouches(a.hook, STAGE_SITE[s]!(a.layer))));
  const plain = pastKind === 'none' && cutAfter.size === 0;
  const segments = (plain && prepackMode ? packedSegments(cfg, w, variant, a.split) : null) ?? segmentsFor(variant, cutAfter);

  // Segments read only the names they need: lastOnly reads the q/k/v split instead of w_qkv/b_qkv.
  const values: Record<string, tf.Tensor> = { h, h3: h, bias, ...Object.fromEntries(blockWeightsByName(w)) };
  if (lastOnly) Object.assign(values, Object.fromEntries(splitWeightsByName(a.split())));
  if (past) Object.assign(values, { past_k: past.k, past_v: past.v });
  const tkOut = pastKind === 'concat' ? tp + t : t;
  const shapes: Record<string, number[]> = {
    attn_out: [b, tq, d],
    hres: [b, tq, d],
    h1: [b, tq, d],
    post: [b, tq, cfg.dMlp],
    mlp_out: [b, tq, d],
    out: [b, tq, d],
    k_out: [b, heads, tkOut, dh],
    v_out: [b, heads, tkOut, dh],
  };
  const extra: Record<string, number[]> = { sh_kv4: [b, t, heads, dh], sh_q4: [b, tq, heads, dh], sh_h3: [b, t, d] };
  if (pastKind === 'shared') {
    const pb = past!.k.shape[0];
    const g = b / pb;
    Object.assign(extra, { sh_q5: [g, pb, heads, tq, dh], sh_s4: [b, heads, tq, tp], sh_split: [tp, t], sh_p5: [g, pb, heads, tq, tp], sh_c4: [b, heads, tq, dh] });
  }
  // Two threads when the block's products are large enough to share (as matmul-kernel.ts).
  const threads = threadsForFlops(2 * b * t * d * 12 * d);
  if (!tf.getKernel(KERNEL, 'wasm')) tf.registerKernel({ kernelName: KERNEL, backendName: 'wasm', kernelFunc: segmentKernel as unknown as tf.KernelFunc });

  let kv: KV | null = null;
  for (const seg of segments) {
    const ins: tf.NamedTensorMap = {};
    for (const name of seg.inputs) if (!(name in extra)) ins[name] = values[name];
    const outs = tf.engine().runKernel(KERNEL, ins, { segment: seg, shapes, extra, threads } as unknown as tf.NamedAttrMap) as unknown as tf.Tensor[];
    seg.outputs.forEach((name, i) => (values[name] = outs[i]));
    if (seg.outputs.includes('k_out')) kv = { k: values.k_out as tf.Tensor4D, v: values.v_out as tf.Tensor4D };
    const last = seg.stages[seg.stages.length - 1];
    const siteOf = STAGE_SITE[last];
    if (siteOf && cutAfter.has(last)) values[STAGE_RESULT[last]] = a.hook!(siteOf(a.layer), values[STAGE_RESULT[last]] as tf.Tensor3D);
  }
  nativeBlockStats.blocks++;
  return { h: values.out as tf.Tensor3D, kv: kv! };
}
