/**
 * The engine modules behind the edit, statistics and evaluation methods. A feature that is
 * null is declared in the protocol but not in this build: the server answers its methods with
 * NOT_AVAILABLE and `initialize` lists it under capabilities.unavailable.
 */
import * as path from 'node:path';
import { evaluationSummary, runEvaluation } from '../eval/run.js';
import type { LoadedModel } from '../model/load.js';
import type { EditRecord, EditRequest } from '../edit/types.js';
import { applyEdit, baseModel, computeEdit, greedyContinuations, layerStats, listEdits, probePrompts, revertEdit, romeHparams, saveModel } from '../edit/index.js';
import { predict } from '../predict.js';
import { subControl, type JobControl } from '../util/jobs.js';
import type {
  EditComputeOptions,
  EditProbeParams,
  EditProbeResult,
  EditSaveResult,
  EvalRunParams,
  EvalRunResult,
  LayerStatsSummary,
  StatsComputeParams,
  StatsComputeResult,
} from '../protocol.js';
import { readRegularText } from '../util/files.js';

export interface EditFeature {
  compute(model: LoadedModel, request: EditRequest, options: EditComputeOptions, control: JobControl): Promise<EditRecord>;
  apply(model: LoadedModel, record: EditRecord, force: boolean): void | Promise<void>;
  revert(model: LoadedModel, id: string): void | Promise<void>;
  list(model: LoadedModel): EditRecord[];
  probe(model: LoadedModel, params: EditProbeParams): EditProbeResult;
  save(model: LoadedModel, dir: string): EditSaveResult;
}

export interface StatsFeature {
  compute(model: LoadedModel, params: StatsComputeParams, control: JobControl): Promise<StatsComputeResult>;
}

export interface EvalFeature {
  run(model: LoadedModel, params: EvalRunParams, control: JobControl): Promise<EvalRunResult>;
}

export interface Features {
  edit: EditFeature | null;
  stats: StatsFeature | null;
  eval: EvalFeature | null;
}

export const FEATURES: Features = {
  edit: {
    compute: (model, request, options, control) => computeEdit(model, request, control, { ...options }),
    apply: (model, record, force) => applyEdit(model, record, { force }),
    revert: (model, id) => {
      revertEdit(model, id);
    },
    list: (model) => listEdits(model),
    probe(model, p) {
      // The unedited model as a view over the kept original tensors: nothing in the engine changes.
      const view: LoadedModel = p.unedited ? { ...model, ...baseModel(model) } : model;
      const scores = probePrompts(view, p.prompts, p.targets);
      const tokens = p.tokens ?? 20;
      const generations = tokens > 0 ? greedyContinuations(view, p.prompts, tokens) : null;
      return {
        edits: p.unedited ? [] : listEdits(model).map((r) => r.id),
        unedited: p.unedited === true,
        prompts: p.prompts.map((prompt, i) => ({
          prompt,
          top: predict(view, prompt, p.k ?? 5).top,
          targets: scores[i].targets,
          generation: generations ? generations[i] : null,
        })),
      };
    },
    save(model, dir) {
      const s = saveModel(model, dir);
      return { dir: s.dir, files: s.files, bytes: s.bytes, edits: listEdits(model).map((r) => r.id) };
    },
  },
  stats: {
    async compute(model, p, control) {
      const layers = p.layers ?? [(await romeHparams(model, {}, subControl(control, 0, 0.05, 'choosing the layer'))).layer];
      const out: LayerStatsSummary[] = [];
      const start = p.layers ? 0 : 0.05;
      for (let i = 0; i < layers.length; i++) {
        const span = (1 - start) / layers.length;
        const s = await layerStats(
          model,
          layers[i],
          { corpus: p.corpus ? path.resolve(p.corpus) : undefined, samples: p.samples, batchTokens: p.batchTokens, cache: p.cache },
          subControl(control, start + i * span, start + (i + 1) * span, `layer ${layers[i]}`),
        );
        const { sum: _sum, ...summary } = s;
        out.push(summary);
      }
      return { layers: out };
    },
  },
  eval: {
    // The same evaluation as `factlens eval` (engine/eval/run.ts).
    async run(model, p, control) {
      const layers = p.layers ?? (p.layer !== undefined ? [p.layer] : undefined);
      const ev = await runEvaluation(
        model,
        {
          dataset: p.dataset,
          edits: p.edits,
          method: p.method,
          limit: p.limit,
          batch: p.batch,
          layers,
          sequential: p.sequential,
          nullSpace: p.nullSpace,
          formula: p.formula,
          perRecord: p.perRecord,
        },
        control,
      );
      const summary = evaluationSummary(ev, model, p.method ?? 'rome');
      // The CLI writes per-record rows to a file; over the wire they come in the result.
      if (p.perRecord) summary.per_record = (ev.result as { per_record?: unknown }).per_record ?? [];
      return summary;
    },
  },
};

/** Why a method is unavailable in this build (for errors and initialize). */
export function unavailableMethods(f: Features = FEATURES): Record<string, string> {
  const out: Record<string, string> = {};
  const why = (what: string) => `${what} is not available in this engine build`;
  if (!f.edit) for (const m of ['edit/apply', 'edit/revert', 'edit/list', 'edit/probe', 'edit/save']) out[m] = why('editing');
  if (!f.stats) out['stats/compute'] = why('statistics');
  if (!f.eval) out['eval/run'] = why('evaluation');
  return out;
}
