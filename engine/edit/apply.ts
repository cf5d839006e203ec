/**
 * Edits as values: compute an EditRecord, then apply, list, revert (any one, or all) and
 * save. Applied records stack in order; an edited layer's matrix is always rebuilt as
 * W0 + Σ deltas from the kept original (state.ts), so reverting all edits restores the
 * original tensors bit for bit and reverting one in the middle recomputes from W0.
 *
 * Methods plug in through `registerEditMethod` (ROME is built in; MEMIT / FT / FT+L modules
 * register themselves or are added to METHODS below).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { writeSafetensors } from '../model/safetensors.js';
import type { JobControl } from '../util/jobs.js';
import { modelContentHash } from './hash.js';
import { computeRome, type RomeOptions } from './rome.js';
import { checkDelta, editState, rebuildLayer } from './state.js';
import { attachVerdict } from './verdict.js';
import type { EditMethod, EditRecord, EditRequest } from './types.js';

/** Options every method accepts (method-specific ones are passed through). */
export type ComputeOptions = RomeOptions & {
  /** Check the edit (apply, probe the edit prompt, revert) and set took/reason (default true). */
  verdict?: boolean;
} & Record<string, unknown>;

export type EditComputer = (model: LoadedModel, request: EditRequest, control: JobControl, opts: ComputeOptions) => Promise<EditRecord>;

const METHODS: Partial<Record<EditMethod, EditComputer>> = {
  rome: computeRome,
};

export function registerEditMethod(method: EditMethod, fn: EditComputer): void {
  METHODS[method] = fn;
}

export function editMethods(): EditMethod[] {
  return Object.keys(METHODS) as EditMethod[];
}

/**
 * Computes an edit against the model's current weights (earlier applied edits included, as
 * the reference's sequential ROME does). The model is not changed: apply the record with
 * applyEdit.
 */
export async function computeEdit(
  model: LoadedModel,
  request: EditRequest,
  control: JobControl = {},
  opts: ComputeOptions = {},
): Promise<EditRecord> {
  const method = request?.method ?? 'rome';
  const fn = METHODS[method];
  if (!fn) {
    throw new FactLensError(
      'INVALID_ARGUMENT',
      `edit method '${method}' is not available; available: ${editMethods().join(', ')}`,
      { field: 'method', method },
    );
  }
  const rec = await fn(model, request, control, opts);
  return opts.verdict === false ? rec : attachVerdict(model, rec);
}

export interface ApplyOptions {
  /** Apply even when the record was computed on a model with another content hash. */
  force?: boolean;
}

/** Applies a record on top of the edits already applied. */
export function applyEdit(model: LoadedModel, record: EditRecord, opts: ApplyOptions = {}): void {
  if (!record || typeof record !== 'object' || !Array.isArray(record.deltas) || typeof record.id !== 'string') {
    throw new FactLensError('INVALID_ARGUMENT', 'not an edit record (needs id and deltas)', { field: 'record' });
  }
  const s = editState(model);
  if (s.records.some((r) => r.id === record.id)) {
    throw new FactLensError('INVALID_ARGUMENT', `edit ${record.id} is already applied`, { field: 'id', id: record.id });
  }
  if (!opts.force && record.modelHash && record.modelHash !== modelContentHash(model)) {
    throw new FactLensError(
      'INVALID_ARGUMENT',
      `edit ${record.id} was computed on another model (content hash ${record.modelHash.slice(0, 12)}…, this one is ${modelContentHash(model).slice(0, 12)}…)`,
      { field: 'modelHash', id: record.id },
    );
  }
  record.deltas.forEach((d, i) => checkDelta(model, d, `edit ${record.id} delta ${i}`));
  s.records.push(record);
  const layers = new Set(record.deltas.map((d) => d.layer));
  try {
    for (const l of layers) rebuildLayer(model, l);
  } catch (e) {
    s.records.pop();
    for (const l of layers) rebuildLayer(model, l);
    throw e;
  }
}

/** Reverts one applied edit (the others stay, recomputed from the originals). */
export function revertEdit(model: LoadedModel, id: string): EditRecord {
  const s = editState(model);
  const i = s.records.findIndex((r) => r.id === id);
  if (i < 0) throw new FactLensError('INVALID_ARGUMENT', `no applied edit has id ${id}`, { field: 'id', id });
  const [rec] = s.records.splice(i, 1);
  for (const l of new Set(rec.deltas.map((d) => d.layer))) rebuildLayer(model, l);
  return rec;
}

/** Reverts every applied edit: the original weight tensors are back. */
export function revertAllEdits(model: LoadedModel): EditRecord[] {
  const s = editState(model);
  const recs = s.records.splice(0, s.records.length);
  for (const l of [...s.originals.keys()]) rebuildLayer(model, l);
  return recs;
}

/** Applied edits, in application order. */
export function listEdits(model: LoadedModel): EditRecord[] {
  return [...editState(model).records];
}

const WEIGHT_FILE = /(\.safetensors|\.safetensors\.index\.json|\.bin|\.pt|\.pth|\.h5|\.msgpack|\.ckpt|\.gguf)$/i;

export interface SavedModel {
  dir: string;
  files: string[];
  bytes: number;
}

/**
 * Writes the model with its applied edits as a checkpoint folder that loadModel reads:
 * `model.safetensors` in float32 (whatever the source dtype: an F16 round trip would round
 * the edit away or change it, so F32 keeps the edited weights exact), `config.json` (dtype set
 * to float32), the source folder's other files (tokenizer, generation config, corpus, facts),
 * and `factlens-edits.json` listing the applied records.
 */
export function saveModel(model: LoadedModel, dirIn: string): SavedModel {
  const dir = path.resolve(dirIn);
  if (dir === path.resolve(model.dir)) {
    throw new FactLensError('INVALID_ARGUMENT', `refusing to overwrite the loaded model's own folder ${dir}; save to another folder`, {
      file: dir,
      field: 'dir',
    });
  }
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) {
    throw new FactLensError('INVALID_ARGUMENT', `${dir} exists and is not a folder`, { file: dir, field: 'dir' });
  }
  fs.mkdirSync(dir, { recursive: true });
  const tensors = model.adapter.exportTensors(model.weights, model.config).map((t) => ({ ...t, dtype: 'F32' as const }));
  const records = listEdits(model);
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, {
    format: 'pt',
    generator: 'factlens',
    factlens_edits: String(records.length),
    factlens_base_model: modelContentHash(model),
  });
  const files = ['model.safetensors'];
  const configFile = path.join(model.dir, 'config.json');
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  let dtypeSet = false;
  for (const k of ['dtype', 'torch_dtype']) {
    if (k in config) {
      config[k] = 'float32';
      dtypeSet = true;
    }
  }
  if (!dtypeSet) config['torch_dtype'] = 'float32';
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  files.push('config.json');
  for (const name of fs.readdirSync(model.dir)) {
    const src = path.join(model.dir, name);
    if (name === 'config.json' || name === 'factlens-edits.json' || WEIGHT_FILE.test(name) || name.startsWith('.')) continue;
    if (!fs.statSync(src).isFile()) continue;
    fs.copyFileSync(src, path.join(dir, name));
    files.push(name);
  }
  fs.writeFileSync(
    path.join(dir, 'factlens-edits.json'),
    JSON.stringify({ baseModel: model.dir, baseModelHash: modelContentHash(model), edits: records }, null, 1) + '\n',
  );
  files.push('factlens-edits.json');
  const bytes = files.reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
  return { dir, files, bytes };
}
