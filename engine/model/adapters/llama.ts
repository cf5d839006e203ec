/**
 * Llama (LlamaForCausalLM / LlamaModel) and Qwen2 (Qwen2ForCausalLM): RMSNorm, SwiGLU MLP
 * (down(silu(gate(x)) · up(x)): canonical mlpGate = gate_proj, mlpIn = up_proj), rotary
 * positions with rotate_half pairing, grouped-query attention (num_key_value_heads), separate
 * q/k/v projections fused into the canonical qkv. Qwen2 adds q/k/v biases and usually ties
 * the head to the embedding. Keys with or without the `model.` prefix.

 */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../../errors.js';
import type { BlockWeights, DecoderConfig, DecoderWeights, LinearWeights } from '../decoder.js';
import type { ArchitectureAdapter } from './types.js';
import { configNumber, toTensor1D, toTensor2D, transposeHost } from './read.js';
import { activationOf, checkRotaryDims, concatVec, eosOf, exporter, hostOfTensor, prefixOf, ropeConfig, splitRows, stackRows, torchReaders } from './torch-layout.js';

// ---------------------------------------------------------------------------------------------
// Llama / Qwen2

function makeLlamaAdapter(modelType: 'llama' | 'qwen2'): ArchitectureAdapter {
  return {
    modelTypes: [modelType],

    parseConfig(config, file): DecoderConfig {
      const d = configNumber(config, ['hidden_size'], file);
      const nHead = configNumber(config, ['num_attention_heads'], file);
      const nKvHead = configNumber(config, ['num_key_value_heads'], file, nHead);
      if (nKvHead <= 0 || nHead % nKvHead !== 0) {
        throw new FactLensError('BAD_CONFIG', `${file}: num_attention_heads ${nHead} is not a multiple of num_key_value_heads ${nKvHead}`, {
          file,
          field: 'num_key_value_heads',
        });
      }
      const headDimRaw = config['head_dim'];
      const headDim = typeof headDimRaw === 'number' ? headDimRaw : d / nHead;
      if (!Number.isInteger(headDim)) {
        throw new FactLensError('BAD_CONFIG', `${file}: hidden_size ${d} is not divisible by num_attention_heads ${nHead}`, {
          file,
          field: 'num_attention_heads',
        });
      }
      if (config['use_sliding_window'] === true) {
        throw new FactLensError('BAD_CONFIG', `${file}: sliding-window attention (use_sliding_window) is not supported`, {
          file,
          field: 'use_sliding_window',
        });
      }
      const rope = ropeConfig(config, file);
      return {
        modelType,
        nLayer: configNumber(config, ['num_hidden_layers'], file),
        dModel: d,
        nHead,
        nKvHead,
        headDim,
        dMlp: configNumber(config, ['intermediate_size'], file),
        vocabSize: configNumber(config, ['vocab_size'], file),
        nCtx: configNumber(config, ['max_position_embeddings'], file),
        norm: 'rmsnorm',
        normEps: configNumber(config, ['rms_norm_eps'], file, 1e-6),
        act: activationOf(config, 'hidden_act', file, modelType),
        gatedMlp: true,
        parallel: 'none',
        positional: {
          kind: 'rotary',
          dims: checkRotaryDims(Math.floor(headDim * rope.partial), headDim, file, 'partial_rotary_factor'),
          style: 'half',
          base: rope.base,
        },
        eosId: eosOf(config),
      };
    },

    loadWeights(ckpt, cfg): DecoderWeights {
      const p = prefixOf(ckpt, 'embed_tokens.weight', ['model.', ''], modelType);
      const { dModel: d, dMlp: f, nHead: h, nKvHead: hkv, headDim: dh } = cfg;
      const { hostMat, hostVec, optVec, torchLinear } = torchReaders(ckpt);
      const wteHost = hostMat(`${p}embed_tokens.weight`, cfg.vocabSize, d);
      const wte = toTensor2D(wteHost);
      const blocks: BlockWeights[] = [];
      for (let l = 0; l < cfg.nLayer; l++) {
        const b = `${p}layers.${l}.`;
        const a = `${b}self_attn.`;
        const qw = hostMat(`${a}q_proj.weight`, h * dh, d);
        const kw = hostMat(`${a}k_proj.weight`, hkv * dh, d);
        const vw = hostMat(`${a}v_proj.weight`, hkv * dh, d);
        const qkv: LinearWeights = { w: toTensor2D(transposeHost(stackRows([qw, kw, vw]))) };
        const names = ['q', 'k', 'v'].map((x) => `${a}${x}_proj.bias`);
        if (names.some((n) => ckpt.has(n))) {
          // Biases come as a set (Qwen2, Llama attention_bias); a missing one is zero.
          const sizes = [h * dh, hkv * dh, hkv * dh];
          qkv.b = tf.tensor1d(concatVec(names.map((n, i) => optVec(n, sizes[i])?.data ?? new Float32Array(sizes[i]))));
        }
        blocks.push({
          ln1: { g: toTensor1D(hostVec(`${b}input_layernorm.weight`, d)) },
          ln2: { g: toTensor1D(hostVec(`${b}post_attention_layernorm.weight`, d)) },
          qkv,
          o: torchLinear(`${a}o_proj`, d, h * dh),
          mlpGate: torchLinear(`${b}mlp.gate_proj`, f, d),
          mlpIn: torchLinear(`${b}mlp.up_proj`, f, d),
          mlpOut: torchLinear(`${b}mlp.down_proj`, d, f),
        });
      }
      // An lm_head in the file wins (untied); without one the head is the embedding.
      const untied = ckpt.has('lm_head.weight');
      // Kept as stored, [vocab, d] (model/unembedding.ts builds the transpose where needed).
      const head = untied ? toTensor2D(hostMat('lm_head.weight', cfg.vocabSize, d)) : wte;
      return {
        wte,
        blocks,
        lnF: { g: toTensor1D(hostVec(`${p}norm.weight`, d)) },
        head,
        tied: !untied,
      };
    },

    exportTensors(w, cfg) {
      const e = exporter();
      const { nHead: h, nKvHead: hkv, headDim: dh } = cfg;
      e.add('model.embed_tokens.weight', w.wte);
      w.blocks.forEach((blk, l) => {
        const b = `model.layers.${l}.`;
        const a = `${b}self_attn.`;
        e.add(`${b}input_layernorm.weight`, blk.ln1.g);
        e.add(`${b}post_attention_layernorm.weight`, blk.ln2?.g);
        const [q, k, v] = splitRows(transposeHost(hostOfTensor(blk.qkv.w)), [h * dh, hkv * dh, hkv * dh]);
        e.addHost(`${a}q_proj.weight`, q);
        e.addHost(`${a}k_proj.weight`, k);
        e.addHost(`${a}v_proj.weight`, v);
        if (blk.qkv.b) {
          const bias = blk.qkv.b.dataSync() as Float32Array;
          e.addHost(`${a}q_proj.bias`, { shape: [h * dh], data: bias.slice(0, h * dh) });
          e.addHost(`${a}k_proj.bias`, { shape: [hkv * dh], data: bias.slice(h * dh, (h + hkv) * dh) });
          e.addHost(`${a}v_proj.bias`, { shape: [hkv * dh], data: bias.slice((h + hkv) * dh) });
        }
        e.addT(`${a}o_proj.weight`, blk.o.w);
        e.add(`${a}o_proj.bias`, blk.o.b);
        e.addT(`${b}mlp.gate_proj.weight`, blk.mlpGate?.w);
        e.add(`${b}mlp.gate_proj.bias`, blk.mlpGate?.b);
        e.addT(`${b}mlp.up_proj.weight`, blk.mlpIn.w);
        e.add(`${b}mlp.up_proj.bias`, blk.mlpIn.b);
        e.addT(`${b}mlp.down_proj.weight`, blk.mlpOut.w);
        e.add(`${b}mlp.down_proj.bias`, blk.mlpOut.b);
      });
      e.add('model.norm.weight', w.lnF.g);
      if (!w.tied) e.add('lm_head.weight', w.head);
      return e.out;
    },
  };
}

export const llamaAdapter = makeLlamaAdapter('llama');
export const qwen2Adapter = makeLlamaAdapter('qwen2');
