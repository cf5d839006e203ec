/** GPT-2 (HF GPT2LMHeadModel / GPT2Model): keys with or without the `transformer.` prefix. */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../../errors.js';
import type { Checkpoint } from '../types.js';
import type { BlockWeights, DecoderConfig, DecoderWeights } from '../decoder.js';
import type { ArchitectureAdapter } from './types.js';
import { configNumber, loadChecked, loadWeight } from './read.js';

function prefixOf(ckpt: Checkpoint): string {
  if (ckpt.has('transformer.wte.weight')) return 'transformer.';
  if (ckpt.has('wte.weight')) return '';
  throw new FactLensError(
    'MISSING_TENSOR',
    `no GPT-2 token embedding ('transformer.wte.weight' or 'wte.weight') in ${ckpt.dir}`,
    { file: ckpt.files[0], tensor: 'transformer.wte.weight' },
  );
}

export const gpt2Adapter: ArchitectureAdapter = {
  modelTypes: ['gpt2'],

  parseConfig(config, file): DecoderConfig {
    const d = configNumber(config, ['n_embd', 'hidden_size'], file);
    const nHead = configNumber(config, ['n_head', 'num_attention_heads'], file);
    const inner = config['n_inner'];
    const act = config['activation_function'] ?? 'gelu_new';
    if (act !== 'gelu_new' && act !== 'gelu' && act !== 'relu' && act !== 'gelu_pytorch_tanh') {
      throw new FactLensError('BAD_CONFIG', `${file}: activation_function '${String(act)}' is not supported for gpt2`, {
        file,
        field: 'activation_function',
      });
    }
    if (config['scale_attn_by_inverse_layer_idx'] === true || config['reorder_and_upcast_attn'] === true) {
      throw new FactLensError('BAD_CONFIG', `${file}: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported`, {
        file,
        field: 'scale_attn_by_inverse_layer_idx',
      });
    }
    const eos = config['eos_token_id'];
    return {
      modelType: 'gpt2',
      nLayer: configNumber(config, ['n_layer', 'num_hidden_layers'], file),
      dModel: d,
      nHead,
      nKvHead: nHead,
      headDim: d / nHead,
      dMlp: typeof inner === 'number' ? inner : 4 * d,
      vocabSize: configNumber(config, ['vocab_size'], file),
      nCtx: configNumber(config, ['n_positions', 'n_ctx', 'max_position_embeddings'], file),
      norm: 'layernorm',
      normEps: configNumber(config, ['layer_norm_epsilon'], file, 1e-5),
      // gelu_pytorch_tanh is the same tanh approximation as gelu_new.
      act: act === 'gelu_pytorch_tanh' ? 'gelu_new' : (act as DecoderConfig['act']),
      gatedMlp: false,
      parallel: 'none',
      positional: { kind: 'learned' },
      eosId: typeof eos === 'number' ? eos : null,
    };
  },

  loadWeights(ckpt, cfg): DecoderWeights {
    const p = prefixOf(ckpt);
    const d = cfg.dModel;
    const f = cfg.dMlp;
    // Each tensor is read straight into its own memory (read.ts: loadChecked).
    const vec = (name: string, n: number) => loadChecked(ckpt, name, [n]) as tf.Tensor1D;
    const mat = (name: string, r: number, c: number) => loadChecked(ckpt, name, [r, c]) as tf.Tensor2D;
    // Block matrices enter only products (host memory for models beyond the WASM heap).
    const weight = (name: string, r: number, c: number) => loadWeight(ckpt, name, [r, c]);
    const wte = mat(`${p}wte.weight`, cfg.vocabSize, d);
    const blocks: BlockWeights[] = [];
    for (let l = 0; l < cfg.nLayer; l++) {
      const b = `${p}h.${l}.`;
      blocks.push({
        ln1: { g: vec(`${b}ln_1.weight`, d), b: vec(`${b}ln_1.bias`, d) },
        ln2: { g: vec(`${b}ln_2.weight`, d), b: vec(`${b}ln_2.bias`, d) },
        qkv: { w: weight(`${b}attn.c_attn.weight`, d, 3 * d), b: vec(`${b}attn.c_attn.bias`, 3 * d) },
        o: { w: weight(`${b}attn.c_proj.weight`, d, d), b: vec(`${b}attn.c_proj.bias`, d) },
        mlpIn: { w: weight(`${b}mlp.c_fc.weight`, d, f), b: vec(`${b}mlp.c_fc.bias`, f) },
        mlpOut: { w: weight(`${b}mlp.c_proj.weight`, f, d), b: vec(`${b}mlp.c_proj.bias`, d) },
      });
    }
    // An untied lm_head (rare for GPT-2) wins over the tied embedding. Kept as stored, [vocab, d]:
    // its transpose is built only if something needs it (model/unembedding.ts).
    const untied = ckpt.has('lm_head.weight');
    const head = untied ? mat('lm_head.weight', cfg.vocabSize, d) : wte;
    return {
      wte,
      wpe: mat(`${p}wpe.weight`, cfg.nCtx, d),
      blocks,
      lnF: { g: vec(`${p}ln_f.weight`, d), b: vec(`${p}ln_f.bias`, d) },
      head,
      tied: !untied,
    };
  },

  exportTensors(w, cfg) {
    const out: Array<{ name: string; shape: number[]; data: Float32Array }> = [];
    const add = (name: string, t: tf.Tensor | undefined) => {
      if (t) out.push({ name, shape: t.shape.slice(), data: t.dataSync() as Float32Array });
    };
    add('transformer.wte.weight', w.wte);
    add('transformer.wpe.weight', w.wpe);
    w.blocks.forEach((blk, l) => {
      const b = `transformer.h.${l}.`;
      add(`${b}ln_1.weight`, blk.ln1.g);
      add(`${b}ln_1.bias`, blk.ln1.b);
      add(`${b}ln_2.weight`, blk.ln2?.g);
      add(`${b}ln_2.bias`, blk.ln2?.b);
      add(`${b}attn.c_attn.weight`, blk.qkv.w);
      add(`${b}attn.c_attn.bias`, blk.qkv.b);
      add(`${b}attn.c_proj.weight`, blk.o.w);
      add(`${b}attn.c_proj.bias`, blk.o.b);
      add(`${b}mlp.c_fc.weight`, blk.mlpIn.w);
      add(`${b}mlp.c_fc.bias`, blk.mlpIn.b);
      add(`${b}mlp.c_proj.weight`, blk.mlpOut.w);
      add(`${b}mlp.c_proj.bias`, blk.mlpOut.b);
    });
    add('transformer.ln_f.weight', w.lnF.g);
    add('transformer.ln_f.bias', w.lnF.b);
    if (!w.tied) add('lm_head.weight', w.head);
    void cfg;
    return out;
  },
};
