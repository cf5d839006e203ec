/**
 * Edits as values: compute an EditRecord, then apply, list, revert (any one, or all) and
 * save. Applied records stack in order; an edited layer's matrix is always rebuilt as
 * W0 + Σ deltas from the kept original (state.ts), so reverting all edits restores the
 * original tensors bit for bit and reverting one in the middle recomputes from W0.
 *
 * Methods plug in through `registerEditMethod` (ROME is built in; MEMIT / FT / FT+L modules
 * register themselves or are added to METHODS below).
 */
import { isHostWeight } from '../runtime/native/host-weights.js';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import type { JobControl } from '../util/jobs.js';
import { modelContentHash } from './hash.js';
import { computeRome, type RomeOptions } from './rome.js';
import { checkDelta, editState, rebuildLayer } from './state.js';
import { attachVerdict } from './verdict.js';
import type { EditMethod, EditRecord, EditRequest } from './types.js';
import { fillTemplate } from '../../formats/template.js';

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
/**
 * Edits change weights through WASM kernels (and read them in the heap); a model whose block
 * matrices live in host memory (a model beyond the WASM heap, runtime/native/host-weights.ts)
 * can be traced and queried but not edited.
 */
function refuseHostWeights(model: LoadedModel): void {
  if (model.weights.blocks.some((b) => isHostWeight(b.mlpOut.w))) {
    throw new FactLensError(
      'MODEL_TOO_LARGE',
      `${model.name} (${(model.parameterCount / 1e6).toFixed(0)}M parameters) keeps its weight matrices outside the 4 GB WASM heap; it can be traced and queried, not edited`,
      { file: model.dir, backend: model.backend },
    );
  }
}

export async function computeEdit(
  model: LoadedModel,
  request: EditRequest,
  control: JobControl = {},
  opts: ComputeOptions = {},
): Promise<EditRecord> {
  refuseHostWeights(model);
  const method = request?.method ?? 'rome';
  const fn = METHODS[method];
  if (!fn) {
    throw new FactLensError(
      'INVALID_ARGUMENT',
      `edit method '${method}' is not available; available: ${editMethods().join(', ')}`,
      { field: 'method', method },
    );
  }
  checkRequestLength(model, request);
  if (typeof request.target === 'string' && typeof request.targetTrue === 'string' && request.target.trim() === request.targetTrue.trim()) {
    // The true answer as the new one: nothing would change; say so rather than "apply" it.
    throw new FactLensError(
      'INVALID_ARGUMENT',
      `the target "${request.target.trim()}" is already the true answer for "${request.subject}": there is nothing to edit; give another target`,
      { field: 'target' },
    );
  }
  const rec = await fn(model, request, control, opts);
  return opts.verdict === false ? rec : attachVerdict(model, rec);
}

/** PROMPT_TOO_LONG, naming the field, when the edit prompt followed by its target cannot fit the context. */
function checkRequestLength(model: LoadedModel, request: EditRequest): void {
  if (typeof request?.prompt !== 'string' || typeof request.subject !== 'string' || typeof request.target !== 'string') return;
  const filled = fillTemplate(request.prompt, request.subject);
  const p = model.tokenizer.encode(filled).length;
  const limit = model.config.nCtx;
  if (p > limit) {
    throw new FactLensError('PROMPT_TOO_LONG', `the edit prompt is ${p} tokens; ${model.name} reads at most ${limit}`, { field: 'prompt', tokens: p, limit });
  }
  const t = model.tokenizer.encode(request.target.startsWith(' ') ? request.target : ` ${request.target}`).length;
  if (p + t - 1 > limit) {
    throw new FactLensError(
      'PROMPT_TOO_LONG',
      `the edit prompt (${p} tokens) followed by the target (${t} tokens) is ${p + t - 1} tokens; ${model.name} reads at most ${limit}`,
      { field: 'target', tokens: p + t - 1, limit },
    );
  }
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
