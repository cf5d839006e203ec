/**
 * GPT-NeoX / Pythia (GPTNeoXForCausalLM / GPTNeoXModel): fused query_key_value whose output
 * rows are interleaved per head ([nHead, 3, headDim]: q, k, v of head 0, then of head 1, ...),
 * reordered here into the canonical q | k | v blocks; rotary positions on the first
 * rotary_pct (partial_rotary_factor) of each head with rotate_half pairing; parallel residual
 * with separate norms (use_parallel_residual) or the sequential GPT-2 layout; untied embed_out
 * head. Keys with or without the `gpt_neox.` prefix.
 */
import { FactLensError } from '../../errors.js';
import type { HostTensor } from '../types.js';
import type { BlockWeights, DecoderConfig, DecoderWeights, LinearWeights } from '../decoder.js';
import type { ArchitectureAdapter } from './types.js';
import { configNumber, toTensor1D, toTensor2D, transposeHost } from './read.js';
import { activationOf, checkRotaryDims, eosOf, exporter, hostOfTensor, prefixOf, ropeConfig, torchReaders } from './torch-layout.js';

/**
 * Reorders the rows of a fused QKV matrix (or vector, as [n, 1]) between NeoX's per-head
 * interleave [nHead, 3, dh] and the canonical [3, nHead, dh]. `toCanonical` false inverts.
 */
export function reorderNeoxRows(t: HostTensor, nHead: number, dh: number, toCanonical: boolean): HostTensor {
  const c = t.shape.length === 2 ? t.shape[1] : 1;
  const out = new Float32Array(t.data.length);
  for (let head = 0; head < nHead; head++) {
    for (let part = 0; part < 3; part++) {
      const neox = (head * 3 + part) * dh * c;
      const canon = (part * nHead + head) * dh * c;
      const [from, to] = toCanonical ? [neox, canon] : [canon, neox];
      out.set(t.data.subarray(from, from + dh * c), to);
    }
  }
  return { shape: t.shape.slice(), data: out };
}

export const gptNeoxAdapter: ArchitectureAdapter = {
  modelTypes: ['gpt_neox'],

  parseConfig(config, file): DecoderConfig {
    const d = configNumber(config, ['hidden_size'], file);
    const nHead = configNumber(config, ['num_attention_heads'], file);
    const headDim = d / nHead;
    if (!Number.isInteger(headDim)) {
      throw new FactLensError('BAD_CONFIG', `${file}: hidden_size ${d} is not divisible by num_attention_heads ${nHead}`, {
        file,
        field: 'num_attention_heads',
      });
    }
    const rope = ropeConfig(config, file);
    // transformers: rotary_ndims = int(head_size * rotary_pct).
    const dims = Math.floor(headDim * rope.partial);
    const parallel = config['use_parallel_residual'];
    return {
      modelType: 'gpt_neox',
      nLayer: configNumber(config, ['num_hidden_layers'], file),
      dModel: d,
      nHead,
      nKvHead: nHead,
      headDim,
      dMlp: configNumber(config, ['intermediate_size'], file, 4 * d),
      vocabSize: configNumber(config, ['vocab_size'], file),
      nCtx: configNumber(config, ['max_position_embeddings'], file),
      norm: 'layernorm',
      normEps: configNumber(config, ['layer_norm_eps'], file, 1e-5),
      act: activationOf({ ...config, hidden_act: config['hidden_act'] ?? 'gelu' }, 'hidden_act', file, 'gpt_neox'),
      gatedMlp: false,
      // transformers defaults use_parallel_residual to true.
      parallel: parallel === false ? 'none' : 'separate-norm',
      positional: {
        kind: 'rotary',
        dims: checkRotaryDims(dims, headDim, file, config['rotary_pct'] !== undefined ? 'rotary_pct' : 'partial_rotary_factor'),
        style: 'half',
        base: rope.base,
      },
      eosId: eosOf(config),
    };
  },

  loadWeights(ckpt, cfg): DecoderWeights {
    const p = prefixOf(ckpt, 'embed_in.weight', ['gpt_neox.', ''], 'GPT-NeoX');
    const { dModel: d, dMlp: f, nHead: h, headDim: dh } = cfg;
    const { hostMat, optVec, vec, torchLinear } = torchReaders(ckpt);
    const wteHost = hostMat(`${p}embed_in.weight`, cfg.vocabSize, d);
    const wte = toTensor2D(wteHost);
    const blocks: BlockWeights[] = [];
    for (let l = 0; l < cfg.nLayer; l++) {
      const b = `${p}layers.${l}.`;
      const fused = `${b}attention.query_key_value`;
      const qkvW = reorderNeoxRows(hostMat(`${fused}.weight`, 3 * d, d), h, dh, true);
      const qkv: LinearWeights = { w: toTensor2D(transposeHost(qkvW)) };
      const qkvB = optVec(`${fused}.bias`, 3 * d);
      if (qkvB) qkv.b = toTensor1D(reorderNeoxRows(qkvB, h, dh, true));
      blocks.push({
        ln1: { g: vec(`${b}input_layernorm.weight`, d), b: vec(`${b}input_layernorm.bias`, d) },
        ln2: { g: vec(`${b}post_attention_layernorm.weight`, d), b: vec(`${b}post_attention_layernorm.bias`, d) },
        qkv,
        o: torchLinear(`${b}attention.dense`, d, d),
        mlpIn: torchLinear(`${b}mlp.dense_h_to_4h`, f, d),
        mlpOut: torchLinear(`${b}mlp.dense_4h_to_h`, d, f),
      });
    }
    const untied = ckpt.has('embed_out.weight');
    return {
      wte,
      blocks,
      lnF: { g: vec(`${p}final_layer_norm.weight`, d), b: vec(`${p}final_layer_norm.bias`, d) },
      // Kept as stored, [vocab, d] (model/unembedding.ts builds the transpose where needed).
      head: untied ? toTensor2D(hostMat('embed_out.weight', cfg.vocabSize, d)) : wte,
      tied: !untied,
    };
  },

  exportTensors(w, cfg) {
    const e = exporter();
    const { nHead: h, headDim: dh } = cfg;
    e.add('gpt_neox.embed_in.weight', w.wte);
    w.blocks.forEach((blk, l) => {
      const b = `gpt_neox.layers.${l}.`;
      e.add(`${b}input_layernorm.weight`, blk.ln1.g);
      e.add(`${b}input_layernorm.bias`, blk.ln1.b);
      e.add(`${b}post_attention_layernorm.weight`, blk.ln2?.g);
      e.add(`${b}post_attention_layernorm.bias`, blk.ln2?.b);
      e.addHost(`${b}attention.query_key_value.weight`, reorderNeoxRows(transposeHost(hostOfTensor(blk.qkv.w)), h, dh, false));
      if (blk.qkv.b) e.addHost(`${b}attention.query_key_value.bias`, reorderNeoxRows(hostOfTensor(blk.qkv.b), h, dh, false));
      e.addT(`${b}attention.dense.weight`, blk.o.w);
      e.add(`${b}attention.dense.bias`, blk.o.b);
      e.addT(`${b}mlp.dense_h_to_4h.weight`, blk.mlpIn.w);
      e.add(`${b}mlp.dense_h_to_4h.bias`, blk.mlpIn.b);
      e.addT(`${b}mlp.dense_4h_to_h.weight`, blk.mlpOut.w);
      e.add(`${b}mlp.dense_4h_to_h.bias`, blk.mlpOut.b);
    });
    e.add('gpt_neox.final_layer_norm.weight', w.lnF.g);
    e.add('gpt_neox.final_layer_norm.bias', w.lnF.b);
    if (!w.tied) e.add('embed_out.weight', w.head);
    return e.out;
  },
};
