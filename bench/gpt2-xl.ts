/**
 * A GPT-2-XL-shaped checkpoint with random float16 weights (1,557,611,200 parameters: 48
 * layers, d=1600, 25 heads, vocab 50257, n_ctx 1024, tied unembedding; 3.1 GB on disk), written
 * as a real Hugging Face folder so the benchmark goes through the real loader. Too large for one
 * buffer, it is streamed tensor by tensor. Matrix and embedding values are normal(0, 0.02),
 * drawn from a seeded pool of 2^20 values and read at a different random offset for each
 * tensor (drawing 1.5B normals would take minutes and the timing does not depend on them);
 * LayerNorm weights 1, biases 0.
 *
 * Cached in os.tmpdir() under a versioned name with a `.complete` marker written last.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { f32ToF16 } from '../engine/model/safetensors.js';
import { defaultModelDir } from '../engine/model/load.js';
import { Rng } from '../engine/util/rng.js';

export const XL_VERSION = 'gpt2-xl-random-f16-v1';
export const GPT2_XL = { nLayer: 48, d: 1600, nHead: 25, vocab: 50257, nCtx: 1024 } as const;
const TOKENIZER_FILES = ['tokenizer.json', 'vocab.json', 'merges.txt', 'tokenizer_config.json'];

export function gpt2XlDir(): string {
  return path.join(os.tmpdir(), 'factlens-bench', XL_VERSION);
}

interface Spec {
  name: string;
  shape: number[];
  fill: 'normal' | 0 | 1;
}

function specs(): Spec[] {
  const { nLayer: L, d, vocab: V, nCtx } = GPT2_XL;
  const out: Spec[] = [
    { name: 'transformer.wte.weight', shape: [V, d], fill: 'normal' },
    { name: 'transformer.wpe.weight', shape: [nCtx, d], fill: 'normal' },
  ];
  for (let l = 0; l < L; l++) {
    const p = `transformer.h.${l}.`;
    out.push(
      { name: `${p}ln_1.weight`, shape: [d], fill: 1 },
      { name: `${p}ln_1.bias`, shape: [d], fill: 0 },
      { name: `${p}attn.c_attn.weight`, shape: [d, 3 * d], fill: 'normal' },
      { name: `${p}attn.c_attn.bias`, shape: [3 * d], fill: 0 },
      { name: `${p}attn.c_proj.weight`, shape: [d, d], fill: 'normal' },
      { name: `${p}attn.c_proj.bias`, shape: [d], fill: 0 },
      { name: `${p}ln_2.weight`, shape: [d], fill: 1 },
      { name: `${p}ln_2.bias`, shape: [d], fill: 0 },
      { name: `${p}mlp.c_fc.weight`, shape: [d, 4 * d], fill: 'normal' },
      { name: `${p}mlp.c_fc.bias`, shape: [4 * d], fill: 0 },
      { name: `${p}mlp.c_proj.weight`, shape: [4 * d, d], fill: 'normal' },
      { name: `${p}mlp.c_proj.bias`, shape: [d], fill: 0 },
    );
  }
  out.push({ name: 'transformer.ln_f.weight', shape: [d], fill: 1 }, { name: 'transformer.ln_f.bias', shape: [d], fill: 0 });
  return out;
}

export function gpt2XlParameterCount(): number {
  return specs().reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
}

/** Builds the folder unless a complete one is cached; returns it. */
export function ensureGpt2Xl(log: (m: string) => void = () => {}): { dir: string; cached: boolean; buildS: number } {
  const dir = gpt2XlDir();
  if (fs.existsSync(path.join(dir, '.complete'))) return { dir, cached: true, buildS: 0 };
  const t0 = Date.now();
  log(`building random GPT-2-XL-shaped float16 checkpoint in ${dir} (3.1 GB) ...`);
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const tmp = fs.mkdtempSync(path.join(path.dirname(dir), `${XL_VERSION}.building-`));
  try {
    const list = specs();
    const header: Record<string, unknown> = { __metadata__: { format: 'pt', generator: `factlens bench ${XL_VERSION}` } };
    let offset = 0;
    for (const s of list) {
      const bytes = s.shape.reduce((x, y) => x * y, 1) * 2;
      header[s.name] = { dtype: 'F16', shape: s.shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
    }
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    const fd = fs.openSync(path.join(tmp, 'model.safetensors'), 'w');
    try {
      fs.writeSync(fd, len);
      fs.writeSync(fd, Buffer.from(json));
      const rng = new Rng(20240611);
      const POOL = 1 << 20;
      const pool = new Float32Array(POOL);
      for (let i = 0; i < POOL; i++) pool[i] = 0.02 * rng.normal();
      const chunk = new Float32Array(POOL);
      const half = new Uint16Array(POOL);
      for (const s of list) {
        const n = s.shape.reduce((x, y) => x * y, 1);
        let start = Math.floor(rng.uniform() * POOL);
        for (let done = 0; done < n; done += POOL) {
          const m = Math.min(POOL, n - done);
          if (s.fill === 'normal') {
            for (let i = 0; i < m; i++) chunk[i] = pool[(start + i) & (POOL - 1)];
            start = (start + 7919) & (POOL - 1);
          } else chunk.fill(s.fill, 0, m);
          f32ToF16(chunk.subarray(0, m), half);
          fs.writeSync(fd, new Uint8Array(half.buffer, 0, m * 2));
        }
      }
    } finally {
      fs.closeSync(fd);
    }
    const tiny = defaultModelDir();
    const base = JSON.parse(fs.readFileSync(path.join(tiny, 'config.json'), 'utf8')) as Record<string, unknown>;
    const { nLayer, d, nHead, vocab, nCtx } = GPT2_XL;
    const config = { ...base, dtype: 'float16', n_embd: d, n_head: nHead, n_layer: nLayer, n_positions: nCtx, n_ctx: nCtx, n_inner: null, vocab_size: vocab, tie_word_embeddings: true, _name_or_path: `factlens-bench/${XL_VERSION}` };
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2));
    for (const f of TOKENIZER_FILES) fs.copyFileSync(path.join(tiny, f), path.join(tmp, f));
    fs.writeFileSync(path.join(tmp, '.complete'), JSON.stringify({ version: XL_VERSION }));
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
    return { dir, cached: false, buildS: (Date.now() - t0) / 1000 };
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
