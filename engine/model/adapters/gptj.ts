/**
 * GPT-J (GPTJForCausalLM / GPTJModel): parallel attention + MLP sharing ln_1, separate
 * bias-free q/k/v/out projections (nn.Linear, [out, in]), rotary positions on the first
 * `rotary_dim` dims of each head with interleaved pairing (rotate_every_two), and an untied
 * LM head with a bias. Keys with or without the `transformer.` prefix.
 */
import { FactLensError } from '../../errors.js';
import type { BlockWeights, DecoderConfig, DecoderWeights } from '../decoder.js';
import type { ArchitectureAdapter } from './types.js';
import { configNumber, toTensor2D, transposeHost } from './read.js';
import {
  activationOf,
  checkRotaryDims,
  eosOf,
  exporter,
  hostOfTensor,
  prefixOf,
  ropeConfig,
  splitRows,
  stackRows,
  torchReaders,
} from './torch-layout.js';

export const gptjAdapter: ArchitectureAdapter = {
  modelTypes: ['gptj'],

  parseConfig(config, file): DecoderConfig {
    const d = configNumber(config, ['n_embd', 'hidden_size'], file);
    const nHead = configNumber(config, ['n_head', 'num_attention_heads'], file);
    const headDim = d / nHead;
    if (!Number.isInteger(headDim)) {
      throw new FactLensError('BAD_CONFIG', `${file}: n_embd ${d} is not divisible by n_head ${nHead}`, { file, field: 'n_head' });
    }
    const inner = config['n_inner'];
    const rotaryDim = config['rotary_dim'];
    const rope = ropeConfig(config, file);
    return {
      modelType: 'gptj',
      nLayer: configNumber(config, ['n_layer', 'num_hidden_layers'], file),
      dModel: d,
      nHead,
      nKvHead: nHead,
      headDim,
      dMlp: typeof inner === 'number' ? inner : 4 * d,
      vocabSize: configNumber(config, ['vocab_size'], file),
      nCtx: configNumber(config, ['n_positions', 'max_position_embeddings'], file),
      norm: 'layernorm',
      normEps: configNumber(config, ['layer_norm_epsilon'], file, 1e-5),
      act: activationOf({ ...config, activation_function: config['activation_function'] ?? 'gelu_new' }, 'activation_function', file, 'gptj'),
      gatedMlp: false,
      parallel: 'shared-norm',
      positional: {
        kind: 'rotary',
        // rotary_dim null/absent: the whole head rotates.
        dims: checkRotaryDims(typeof rotaryDim === 'number' ? rotaryDim : headDim, headDim, file, 'rotary_dim'),
        style: 'interleaved',
        base: rope.base,
      },
      eosId: eosOf(config),
    };
  },

  loadWeights(ckpt, cfg): DecoderWeights {
    const p = prefixOf(ckpt, 'wte.weight', ['transformer.', ''], 'GPT-J');
    const { dModel: d, dMlp: f } = cfg;
    const { hostMat, vec, torchLinear } = torchReaders(ckpt);
    const wteHost = hostMat(`${p}wte.weight`, cfg.vocabSize, d);
    const wte = toTensor2D(wteHost);
    const blocks: BlockWeights[] = [];
    for (let l = 0; l < cfg.nLayer; l++) {
      const b = `${p}h.${l}.`;
      const qkvRows = stackRows(['q', 'k', 'v'].map((x) => hostMat(`${b}attn.${x}_proj.weight`, d, d)));
      blocks.push({
        ln1: { g: vec(`${b}ln_1.weight`, d), b: vec(`${b}ln_1.bias`, d) },
        qkv: { w: toTensor2D(transposeHost(qkvRows)) },
        o: torchLinear(`${b}attn.out_proj`, d, d),
        mlpIn: torchLinear(`${b}mlp.fc_in`, f, d),
        mlpOut: torchLinear(`${b}mlp.fc_out`, d, f),
      });
    }
    const untied = ckpt.has('lm_head.weight');
    const weights: DecoderWeights = {
      wte,
      blocks,
      lnF: { g: vec(`${p}ln_f.weight`, d), b: vec(`${p}ln_f.bias`, d) },
      // Kept as stored, [vocab, d] (model/unembedding.ts builds the transpose where needed).
      head: untied ? toTensor2D(hostMat('lm_head.weight', cfg.vocabSize, d)) : wte,
      tied: !untied,
    };
    if (untied && ckpt.has('lm_head.bias')) weights.unembedBias = vec('lm_head.bias', cfg.vocabSize);
    return weights;
  },

  exportTensors(w, cfg) {
    const e = exporter();
    const d = cfg.dModel;
    e.add('transformer.wte.weight', w.wte);
    w.blocks.forEach((blk, l) => {
      const b = `transformer.h.${l}.`;
      e.add(`${b}ln_1.weight`, blk.ln1.g);
      e.add(`${b}ln_1.bias`, blk.ln1.b);
      const [q, k, v] = splitRows(transposeHost(hostOfTensor(blk.qkv.w)), [d, d, d]);
      e.addHost(`${b}attn.q_proj.weight`, q);
      e.addHost(`${b}attn.k_proj.weight`, k);
      e.addHost(`${b}attn.v_proj.weight`, v);
      e.addT(`${b}attn.out_proj.weight`, blk.o.w);
      e.add(`${b}attn.out_proj.bias`, blk.o.b);
      e.addT(`${b}mlp.fc_in.weight`, blk.mlpIn.w);
      e.add(`${b}mlp.fc_in.bias`, blk.mlpIn.b);
      e.addT(`${b}mlp.fc_out.weight`, blk.mlpOut.w);
      e.add(`${b}mlp.fc_out.bias`, blk.mlpOut.b);
    });
    e.add('transformer.ln_f.weight', w.lnF.g);
    e.add('transformer.ln_f.bias', w.lnF.b);
    if (!w.tied) {
      e.add('lm_head.weight', w.head);
      e.add('lm_head.bias', w.unembedBias);
    }
    return e.out;
  },
};
