/** Model editing: ROME, MEMIT, FT, FT+L through apply.ts's method registry; MEMIT also as a batch. */
export * from './types.js';
export { computeEdit, applyEdit, revertEdit, revertAllEdits, listEdits, registerEditMethod, editMethods } from './apply.js';
export type { ComputeOptions, EditComputer, ApplyOptions } from './apply.js';
export { saveModel, checkSaveDestination, type SavedModel, type SaveOptions } from './save.js';
export { computeRome, romeEditParts, computeVStar, romeKeys, leftVector, rightVector, prepareRequest } from './rome.js';
export type { RomeOptions, RomeParts, VStep, VResult, RomeKeys, RomeUpdate, PreparedRequest } from './rome.js';
export { layerStats, secondMoment, statsFactor, readCorpus, importNpzStats, defaultCorpus, MAX_STATS_SAMPLES } from './stats.js';
export type { LayerStats, StatsOptions } from './stats.js';
export { computeMemit, memitEditParts } from './memit.js';
export type { MemitOptions, MemitParts } from './memit.js';
export { memitHparams, MEMIT_DEFAULTS, MEMIT_REFERENCE_MODELS } from './memit-hparams.js';
export type { MemitHparams } from './memit-hparams.js';
export { contextTemplates, cleanTemplateText } from './templates.js';
export type { ContextTemplates, TemplateOptions } from './templates.js';
export { romeHparams, chooseLayer, referenceModel, ROME_DEFAULTS, REFERENCE_MODELS } from './hparams.js';
export type { RomeHparams, LayerChoice } from './hparams.js';
export { modelContentHash, cacheRoot } from './hash.js';
export { baseModel, hasEdits } from './state.js';
export { probePrompts, greedyContinuations } from './probe.js';
export { editVerdict, attachVerdict, greedyCheck } from './verdict.js';
export type { EditVerdict } from './verdict.js';
export type { PromptProbe, TargetScore } from './probe.js';

// The fine-tuning baselines join the method registry, so `factlens edit --method ft|ft-l` and
// the engine's edit/apply reach them like ROME.
import { registerEditMethod as register } from './apply.js';
import { computeFTEdit, computeFTLEdit } from './ft.js';
register('ft', computeFTEdit);
register('ft-l', computeFTLEdit);
import { computeMemit } from './memit.js';
import type { EditRecord, EditRequest } from './types.js';
import type { LoadedModel } from '../model/load.js';
import type { JobControl } from '../util/jobs.js';
import type { MemitOptions } from './memit.js';
import { attachVerdict } from './verdict.js';
register('memit', (model, request, control, opts) => computeMemit(model, [request], control, opts as MemitOptions));

/** Many edits as one (MEMIT, rome-spec §5): one record whose deltas carry every request. */
export async function computeEditBatch(
  model: LoadedModel,
  requests: EditRequest[],
  control: JobControl = {},
  opts: MemitOptions & { verdict?: boolean } = {},
): Promise<EditRecord> {
  const rec = await computeMemit(model, requests, control, opts);
  return opts.verdict === false ? rec : attachVerdict(model, rec);
}
