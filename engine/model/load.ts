/**
 * Loading a model folder: checkpoint → adapter → canonical decoder weights on the active
 * backend, plus its tokenizer. The embedded tinyworld model is used when no folder is named.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { openCheckpoint } from './checkpoint.js';
import { adapterFor } from './adapters/index.js';
import { validateConfig } from './validate.js';
import type { ArchitectureAdapter } from './adapters/types.js';
import type { DecoderConfig, DecoderWeights } from './decoder.js';
import { loadTokenizer } from '../tokenizer/index.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { checkFits, estimateModelBytes, selectBackend, WASM_HEAP_BYTES, type BackendName } from '../runtime/backend.js';
import { withHostMatrices } from './adapters/read.js';
import { prefaultHeap } from '../runtime/heap-prefault.js';
import { disposeQkvSplit } from '../runtime/decoder-forward.js';
import { disposeNativeBlock } from '../runtime/native/block.js';
import { disposeUnembed } from './unembedding.js';

export interface LoadedModel {
  /** Absolute folder the model was loaded from. */
  dir: string;
  /** A short display name (the folder name, or "tinyworld" for the embedded model). */
  name: string;
  config: DecoderConfig;
  weights: DecoderWeights;
  tokenizer: Tokenizer;
  adapter: ArchitectureAdapter;
  backend: BackendName;
  parameterCount: number;
}

/** The embedded default model, found beside the sources or beside a bundle. */
export function defaultModelDir(): string {
  const candidates = [
    path.resolve(__dirname, '..', 'assets', 'tinyworld'),
    path.resolve(__dirname, 'assets', 'tinyworld'),
    path.resolve(__dirname, '..', 'engine', 'assets', 'tinyworld'),
    // The CLI bundle: dist/engine/cli.js → engine/assets/tinyworld.
    path.resolve(__dirname, '..', '..', 'engine', 'assets', 'tinyworld'),
  ];
  for (const c of candidates) if (fs.existsSync(path.join(c, 'config.json'))) return c;
  return candidates[0];
}

export interface LoadOptions {
  dir?: string;
  backend?: string;
  /** Load without a tokenizer folder check (architecture test checkpoints carry none). */
  withoutTokenizer?: boolean;
}

export async function loadModel(opts: LoadOptions = {}): Promise<LoadedModel> {
  const dir = path.resolve(opts.dir ?? defaultModelDir());
  const backend = await selectBackend(opts.backend);
  const ckpt = openCheckpoint(dir);
  const configFile = path.join(dir, 'config.json');
  const adapter = adapterFor(ckpt.config, configFile);
  const config = adapter.parseConfig(ckpt.config, configFile);
  validateConfig(config, ckpt.config, configFile, ckpt);
  const params = ckpt.parameterCount();
  const unembedParams = config.vocabSize * config.dModel;
  // On 'native', a GPT-2 whose weights exceed the WASM heap keeps its block matrices in host
  // memory (runtime/native/host-weights.ts); the rest must fit the heap.
  const hostMatrices =
    backend === 'native' && config.modelType === 'gpt2' && estimateModelBytes(params, backend, unembedParams) > WASM_HEAP_BYTES * 0.9;
  const blockMatrices = config.nLayer * (4 * config.dModel * config.dModel + 2 * config.dModel * config.dMlp);
  checkFits(hostMatrices ? params - blockMatrices : params, unembedParams, backend, dir);
  // The weights' pages are faulted in on libuv's threads while the tokenizer is built
  // (runtime/heap-prefault.ts); nothing touches the WASM heap until done().
  const prefault = opts.withoutTokenizer || hostMatrices ? null : prefaultHeap(prefaultBytes(params), ckpt.files);
  let tokenizer: Tokenizer;
  try {
    tokenizer = opts.withoutTokenizer ? nullTokenizer(config) : loadTokenizer(dir);
  } finally {
    await prefault?.done();
  }
  const weights = hostMatrices ? withHostMatrices(() => adapter.loadWeights(ckpt, config)) : adapter.loadWeights(ckpt, config);
  const isDefault = dir === path.resolve(defaultModelDir());
  return {
    dir,
    name: isDefault ? 'tinyworld' : path.basename(dir),
    config,
    weights,
    tokenizer,
    adapter,
    backend,
    parameterCount: params,
  };
}

/**
 * The heap block to fault in for `params` float32 weights: their bytes and some slack, because the
 * load allocates a little beside them (on native the last weights landed 1 MB past the exact size).
 * Pages faulted in beyond the weights are not lost: the first forward's activations take them.
 */
function prefaultBytes(params: number): number {
  return Math.ceil(params * 4 * 1.02) + (4 << 20);
}

/** Frees a model's tensors. */
export function disposeModel(m: LoadedModel): void {
  const w = m.weights;
  disposeUnembed(w);
  const all: Array<tf.Tensor | undefined> = [w.wte, w.wpe, w.head, w.unembedBias, w.lnF.g, w.lnF.b];
  for (const b of w.blocks) {
    disposeQkvSplit(b.qkv);
    disposeNativeBlock(b);
    all.push(b.ln1.g, b.ln1.b, b.ln2?.g, b.ln2?.b, b.qkv.w, b.qkv.b, b.o.w, b.o.b, b.mlpIn.w, b.mlpIn.b);
    all.push(b.mlpGate?.w, b.mlpGate?.b, b.mlpOut.w, b.mlpOut.b);
  }
  for (const t of new Set(all)) if (t && !t.isDisposed) t.dispose();
}

/** Architecture fixtures have ids but no tokenizer files: decoding shows ids. */
function nullTokenizer(cfg: DecoderConfig): Tokenizer {
  return {
    encode: () => {
      throw new Error('this model folder has no tokenizer');
    },
    decode: (ids: number[]) => ids.map((i) => `<${i}>`).join(''),
    tokenToString: (id: number) => `<${id}>`,
    vocabSize: cfg.vocabSize,
    eosId: cfg.eosId,
    specialTokens: new Map(),
  } as Tokenizer;
}
