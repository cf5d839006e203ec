/**
 * A GPT-2-small-shaped checkpoint with random weights (124,439,808 parameters: 12 layers,
 * d=768, 12 heads, vocab 50257, n_ctx 1024, tied unembedding), written as a real Hugging Face
 * folder (config.json + model.safetensors in F32 + the tinyworld tokenizer files) so the
 * benchmark goes through the real loader. Weights: normal(0, 0.02) for matrices and
 * embeddings; LayerNorm weights 1, biases 0 (as GPT-2's initialisation).
 *
 * The folder is cached in os.tmpdir() under a versioned name: bump VERSION when the recipe
 * changes. A `.complete` marker is written last, so an interrupted build is rebuilt.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeSafetensors, type TensorToWrite } from '../engine/model/safetensors.js';
import { defaultModelDir } from '../engine/model/load.js';

export const VERSION = 'gpt2-small-random-f32-v1';
const SEED = 20240611;
const TOKENIZER_FILES = ['tokenizer.json', 'vocab.json', 'merges.txt', 'tokenizer_config.json'];

export const GPT2_SMALL = { nLayer: 12, d: 768, nHead: 12, vocab: 50257, nCtx: 1024 } as const;

export function gpt2SmallDir(): string {
  return path.join(os.tmpdir(), 'factlens-bench', VERSION);
}

export function gpt2SmallParameterCount(): number {
  const { nLayer: L, d, vocab: V, nCtx } = GPT2_SMALL;
  const perBlock = 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d);
  return V * d + nCtx * d + L * perBlock + 2 * d;
}

/** Fills `out` with normal(0, std) values: sfc32 + Box–Muller, seeded. */
function fillNormal(out: Float32Array, std: number, state: Uint32Array): void {
  let [a, b, c, d] = state;
  const u32 = () => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t;
  };
  const twoPi = 2 * Math.PI;
  for (let i = 0; i < out.length; i += 2) {
    const u1 = (u32() + 1) / 4294967297; // (0, 1): log is finite
    const u2 = u32() / 4294967296;
    const r = std * Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(twoPi * u2);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(twoPi * u2);
  }
  state[0] = a;
  state[1] = b;
  state[2] = c;
  state[3] = d;
}

function isComplete(dir: string): boolean {
  try {
    const marker = JSON.parse(fs.readFileSync(path.join(dir, '.complete'), 'utf8')) as { version: string; bytes: number };
    if (marker.version !== VERSION) return false;
    if (fs.statSync(path.join(dir, 'model.safetensors')).size !== marker.bytes) return false;
    return ['config.json', ...TOKENIZER_FILES].every((f) => fs.existsSync(path.join(dir, f)));
  } catch {
    return false;
  }
}

export interface EnsureResult {
  dir: string;
  cached: boolean;
  /** Seconds spent generating (0 when cached). */
  buildS: number;
  bytes: number;
}

/** Returns the cached checkpoint folder, building it first when missing or stale. */
export function ensureGpt2Small(log: (m: string) => void = () => {}): EnsureResult {
  const dir = gpt2SmallDir();
  if (isComplete(dir)) {
    return { dir, cached: true, buildS: 0, bytes: fs.statSync(path.join(dir, 'model.safetensors')).size };
  }
  const t0 = Date.now();
  log(`building random GPT-2-small checkpoint in ${dir} ...`);
  // Build beside the final folder and rename, so concurrent runs never see half a folder.
  const parent = path.dirname(dir);
  fs.mkdirSync(parent, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(parent, `${VERSION}.building-`));
  try {
    const { nLayer: L, d, nHead, vocab: V, nCtx } = GPT2_SMALL;
    const state = new Uint32Array([SEED, 0x9e3779b9, 0x85ebca6b, 0xc2b2ae35]);
    const tensors: TensorToWrite[] = [];
    const normal = (name: string, shape: number[]) => {
      const data = new Float32Array(shape.reduce((x, y) => x * y, 1));
      fillNormal(data, 0.02, state);
      tensors.push({ name, shape, data });
    };
    const constant = (name: string, n: number, value: number) => {
      tensors.push({ name, shape: [n], data: new Float32Array(n).fill(value) });
    };
    normal('transformer.wte.weight', [V, d]);
    normal('transformer.wpe.weight', [nCtx, d]);
    for (let l = 0; l < L; l++) {
      const p = `transformer.h.${l}.`;
      constant(`${p}ln_1.weight`, d, 1);
      constant(`${p}ln_1.bias`, d, 0);
      normal(`${p}attn.c_attn.weight`, [d, 3 * d]);
      constant(`${p}attn.c_attn.bias`, 3 * d, 0);
      normal(`${p}attn.c_proj.weight`, [d, d]);
      constant(`${p}attn.c_proj.bias`, d, 0);
      constant(`${p}ln_2.weight`, d, 1);
      constant(`${p}ln_2.bias`, d, 0);
      normal(`${p}mlp.c_fc.weight`, [d, 4 * d]);
      constant(`${p}mlp.c_fc.bias`, 4 * d, 0);
      normal(`${p}mlp.c_proj.weight`, [4 * d, d]);
      constant(`${p}mlp.c_proj.bias`, d, 0);
    }
    constant('transformer.ln_f.weight', d, 1);
    constant('transformer.ln_f.bias', d, 0);
    writeSafetensors(path.join(tmp, 'model.safetensors'), tensors, { format: 'pt', generator: `factlens bench ${VERSION}` });
    tensors.length = 0;

    const tiny = defaultModelDir();
    const base = JSON.parse(fs.readFileSync(path.join(tiny, 'config.json'), 'utf8')) as Record<string, unknown>;
    const config = {
      ...base,
      dtype: 'float32',
      n_embd: d,
      n_head: nHead,
      n_layer: L,
      n_positions: nCtx,
      n_ctx: nCtx,
      n_inner: null,
      vocab_size: V,
      tie_word_embeddings: true,
      _name_or_path: `factlens-bench/${VERSION}`,
    };
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2));
    for (const f of TOKENIZER_FILES) fs.copyFileSync(path.join(tiny, f), path.join(tmp, f));
    const bytes = fs.statSync(path.join(tmp, 'model.safetensors')).size;
    fs.writeFileSync(path.join(tmp, '.complete'), JSON.stringify({ version: VERSION, bytes }));
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
    return { dir, cached: false, buildS: (Date.now() - t0) / 1000, bytes };
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
