/**
 * Saving an edited model as a checkpoint folder, without ever destroying weights:
 *
 *  - the destination is checked before anything is computed (checkSaveDestination): it may
 *    not resolve (through symlinks: realpath) to the loaded model's folder, into it, or to a
 *    folder that contains it; an existing folder that is not empty needs `force`;
 *  - the files are written into a temporary sibling folder, read back and compared tensor by
 *    tensor, and only then moved into place (one rename per file);
 *  - weight files of the destination that are not ours (an old `model.safetensors.index.json`
 *    and its shards, `.bin` files) are removed, since loading prefers an index over
 *    `model.safetensors` and the edit would silently be lost;
 *  - the destination is opened again as a checkpoint and compared once more.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FactLensError } from '../errors.js';
import { openCheckpoint } from '../model/checkpoint.js';
import type { LoadedModel } from '../model/load.js';
import { writeSafetensors } from '../model/safetensors.js';
import { listEdits } from './apply.js';
import { modelContentHash } from './hash.js';

/** Files a checkpoint loader may pick up as weights. */
const WEIGHT_FILE = /(\.safetensors|\.safetensors\.index\.json|\.bin|\.pt|\.pth|\.h5|\.msgpack|\.ckpt|\.gguf)$/i;

export interface SavedModel {
  dir: string;
  files: string[];
  bytes: number;
}

export interface SaveOptions {
  /** Allow a destination folder that already has files (ours replace theirs; others stay). */
  force?: boolean;
}

/** realpath of a path that may not exist yet: the nearest existing ancestor's realpath + the rest. */
function realpathOf(p: string): string {
  const abs = path.resolve(p);
  const rest: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return path.join(fs.realpathSync(cur), ...rest.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return abs;
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
}

/** a === b or a inside b. */
function within(a: string, b: string): boolean {
  const rel = path.relative(b, a);
  return rel === '' || (!rel.startsWith(`..${path.sep}`) && rel !== '..' && !path.isAbsolute(rel));
}

const refuse = (message: string, file: string) => new FactLensError('INVALID_ARGUMENT', message, { file, field: 'save' });

/**
 * Checks a save destination; returns its resolved (real) path. Throws INVALID_ARGUMENT naming
 * the folder when saving there could overwrite or lose weights.
 */
export function checkSaveDestination(model: LoadedModel, dirIn: string, opts: SaveOptions = {}): string {
  const given = path.resolve(dirIn);
  const dest = realpathOf(given);
  const source = realpathOf(model.dir);
  const via = dest === given ? '' : ` (${given} resolves to it)`;
  if (within(dest, source)) {
    throw refuse(
      dest === source
        ? `refusing to save into the loaded model's own folder ${dest}${via}: it would overwrite the original weights; save to another folder`
        : `refusing to save into ${dest}${via}, inside the loaded model's folder ${source}; save to a folder outside it`,
      dest,
    );
  }
  if (within(source, dest)) {
    throw refuse(`refusing to save into ${dest}${via}: it contains the loaded model's folder ${source}`, dest);
  }
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(dest);
  } catch {
    st = undefined;
  }
  if (st && !st.isDirectory()) throw refuse(`${dest} exists and is not a folder`, dest);
  if (st && !opts.force) {
    const entries = fs.readdirSync(dest);
    if (entries.length > 0) {
      const shown = entries.slice(0, 4).join(', ') + (entries.length > 4 ? `, … (${entries.length} in all)` : '');
      throw refuse(`${dest} is not empty (${shown}); save to a new or empty folder, or pass --force to replace its checkpoint files`, dest);
    }
  }
  // The temporary sibling needs a writable parent (the destination's, once created).
  const parent = path.dirname(dest);
  let ancestor = parent;
  while (!fs.existsSync(ancestor) && path.dirname(ancestor) !== ancestor) ancestor = path.dirname(ancestor);
  try {
    fs.accessSync(ancestor, fs.constants.W_OK);
  } catch {
    throw refuse(`cannot save to ${dest}: ${ancestor} is not writable`, dest);
  }
  return dest;
}

interface Exported {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Opens `dir` as a checkpoint and compares every tensor bit for bit with what was written. */
function verifyCheckpoint(dir: string, tensors: Exported[]): void {
  const ckpt = openCheckpoint(dir);
  const names = new Set(ckpt.tensorNames());
  for (const t of tensors) {
    const bad = (why: string) =>
      new FactLensError('CORRUPT_SAFETENSORS', `saving to ${dir} failed verification: tensor "${t.name}" ${why}`, { file: dir, tensor: t.name });
    if (!names.has(t.name)) throw bad('is missing when the folder is loaded again');
    const back = ckpt.read(t.name);
    const a = new Uint8Array(back.data.buffer, back.data.byteOffset, back.data.byteLength);
    const b = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    if (back.shape.join(',') !== t.shape.join(',') || !Buffer.from(a).equals(Buffer.from(b))) {
      throw bad('reads back different values (the loader picked up other weights)');
    }
  }
}

/**
 * Writes the model with its applied edits as a checkpoint folder that loadModel reads:
 * `model.safetensors` in float32 (whatever the source dtype: an F16 round trip would round
 * the edit away or change it, so F32 keeps the edited weights exact), `config.json` (dtype set
 * to float32), the source folder's other regular files (tokenizer, generation config, corpus,
 * facts), and `factlens-edits.json` listing the applied records.
 */
export function saveModel(model: LoadedModel, dirIn: string, opts: SaveOptions = {}): SavedModel {
  const dir = checkSaveDestination(model, dirIn, opts);
  const parent = path.dirname(dir);
  fs.mkdirSync(parent, { recursive: true });
  const tmp = path.join(parent, `.${path.basename(dir)}.factlens-tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  fs.mkdirSync(tmp);
  try {
    const tensors = model.adapter.exportTensors(model.weights, model.config);
    const records = listEdits(model);
    writeSafetensors(path.join(tmp, 'model.safetensors'), tensors.map((t) => ({ ...t, dtype: 'F32' as const })), {
      format: 'pt',
      generator: 'factlens',
      factlens_edits: String(records.length),
      factlens_base_model: modelContentHash(model),
    });
    const files = ['model.safetensors'];
    const config = JSON.parse(fs.readFileSync(path.join(model.dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    let dtypeSet = false;
    for (const k of ['dtype', 'torch_dtype']) {
      if (k in config) {
        config[k] = 'float32';
        dtypeSet = true;
      }
    }
    if (!dtypeSet) config['torch_dtype'] = 'float32';
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    files.push('config.json');
    for (const name of fs.readdirSync(model.dir)) {
      const src = path.join(model.dir, name);
      if (name === 'config.json' || name === 'factlens-edits.json' || WEIGHT_FILE.test(name) || name.startsWith('.')) continue;
      // Regular files only: a FIFO or device would block the copy (and is no model file).
      if (!fs.lstatSync(src).isFile()) continue;
      fs.copyFileSync(src, path.join(tmp, name));
      files.push(name);
    }
    fs.writeFileSync(
      path.join(tmp, 'factlens-edits.json'),
      JSON.stringify({ baseModel: model.dir, baseModelHash: modelContentHash(model), edits: records }, null, 1) + '\n',
    );
    files.push('factlens-edits.json');
    verifyCheckpoint(tmp, tensors);

    if (!fs.existsSync(dir)) {
      fs.renameSync(tmp, dir);
    } else {
      // --force into an existing folder: weights that are not ours go (an index would win over
      // our model.safetensors), ours replace theirs file by file; unrelated files stay.
      for (const name of fs.readdirSync(dir)) {
        if (WEIGHT_FILE.test(name) && !files.includes(name)) fs.rmSync(path.join(dir, name), { force: true, recursive: true });
      }
      for (const name of files) fs.renameSync(path.join(tmp, name), path.join(dir, name));
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    verifyCheckpoint(dir, tensors);
    const bytes = files.reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
    return { dir, files, bytes };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
