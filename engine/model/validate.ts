/**
 * Checks a parsed config against itself and against the checkpoint's tensors before anything
 * runs. Without it a bad config.json gives wrong numbers with no error: an `n_head` that does
 * not divide `n_embd` still runs (with other head sizes), an `n_layer` smaller than the
 * checkpoint silently drops layers, a negative `layer_norm_epsilon` gives NaN probabilities.
 * Errors name the config field (as spelled in this config.json) and the file.
 */
import { FactLensError } from '../errors.js';
import type { DecoderConfig } from './decoder.js';
import type { Checkpoint } from './types.js';

/** How each canonical field may be spelled in a Hugging Face config.json. */
const SPELLINGS: Record<string, string[]> = {
  nLayer: ['n_layer', 'num_hidden_layers', 'num_layers'],
  dModel: ['n_embd', 'hidden_size', 'd_model'],
  nHead: ['n_head', 'num_attention_heads'],
  nKvHead: ['num_key_value_heads', 'n_head', 'num_attention_heads'],
  headDim: ['head_dim', 'n_head', 'num_attention_heads'],
  dMlp: ['n_inner', 'intermediate_size', 'n_embd', 'hidden_size'],
  vocabSize: ['vocab_size'],
  nCtx: ['n_positions', 'n_ctx', 'max_position_embeddings'],
  normEps: ['layer_norm_epsilon', 'layer_norm_eps', 'rms_norm_eps'],
};

/** The config.json key behind a canonical field (the first spelling present). */
function fieldOf(raw: Record<string, unknown>, key: keyof typeof SPELLINGS): string {
  const names = SPELLINGS[key];
  return names.find((n) => raw[n] !== undefined && raw[n] !== null) ?? names[0];
}

/** Tensor names with a block index: `h.3.`, `layers.3.`, `layer.3.`, `blocks.3.`. */
const LAYER_TENSOR = /(?:^|\.)(?:h|layers|layer|blocks)\.(\d+)\./;

export function validateConfig(cfg: DecoderConfig, raw: Record<string, unknown>, file: string, ckpt?: Checkpoint): void {
  const bad = (key: keyof typeof SPELLINGS, msg: string, extra: Record<string, unknown> = {}) => {
    const field = fieldOf(raw, key);
    return new FactLensError('BAD_CONFIG', `${file}: ${msg.replace(/\{f\}/g, field)}`, { file, field, ...extra });
  };
  for (const key of ['nLayer', 'dModel', 'nHead', 'nKvHead', 'headDim', 'dMlp', 'vocabSize', 'nCtx'] as const) {
    const v = cfg[key];
    if (!Number.isSafeInteger(v) || v < 1) {
      if (key === 'headDim' && Number.isFinite(v)) {
        throw bad('nHead', `{f} ${cfg.nHead} does not divide the model width ${cfg.dModel} (${fieldOf(raw, 'dModel')}) into whole heads`, {
          value: cfg.nHead,
          width: cfg.dModel,
        });
      }
      throw bad(key, `{f} must be a whole number ≥ 1, not ${JSON.stringify(v)}`, { value: v });
    }
  }
  if (cfg.nHead % cfg.nKvHead !== 0) {
    throw bad('nKvHead', `{f} ${cfg.nKvHead} does not divide the ${cfg.nHead} attention heads`, { value: cfg.nKvHead });
  }
  if (!Number.isFinite(cfg.normEps) || cfg.normEps <= 0) {
    throw bad('normEps', `{f} must be a positive number, not ${cfg.normEps}`, { value: cfg.normEps });
  }
  if (cfg.positional.kind === 'rotary' && (!Number.isSafeInteger(cfg.positional.dims) || cfg.positional.dims < 2 || cfg.positional.dims > cfg.headDim)) {
    throw new FactLensError('BAD_CONFIG', `${file}: rotary dimensions ${cfg.positional.dims} must be between 2 and the head size ${cfg.headDim}`, {
      file,
      field: 'rotary_dim',
    });
  }
  if (ckpt) {
    const layers = new Set<number>();
    for (const name of ckpt.tensorNames()) {
      const m = LAYER_TENSOR.exec(name);
      if (m) layers.add(Number(m[1]));
    }
    if (layers.size > 0) {
      const inCheckpoint = Math.max(...layers) + 1;
      if (inCheckpoint !== cfg.nLayer) {
        throw bad(
          'nLayer',
          `{f} is ${cfg.nLayer} but the checkpoint has ${inCheckpoint} layers of weights (${ckpt.files.length === 1 ? ckpt.files[0] : ckpt.dir}); ` +
            `${inCheckpoint > cfg.nLayer ? 'the model would silently run fewer layers' : 'layers would be missing'}`,
          { value: cfg.nLayer, checkpointLayers: inCheckpoint },
        );
      }
    }
  }
}
