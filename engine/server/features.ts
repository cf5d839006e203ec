/**
 * The engine modules behind the edit, statistics and evaluation methods. A feature that is
 * null is declared in the protocol but not in this build: the server answers its methods with
 * NOT_AVAILABLE and `initialize` lists it under capabilities.unavailable.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FactLensError } from '../errors.js';
import { evaluateCounterFact, type CounterFactCase, type CounterFactResult } from '../eval/counterfact.js';
import type { EditLoopOptions } from '../eval/loop.js';
import { wireMethod } from '../eval/methods.js';
import type { LoadedModel } from '../model/load.js';
import type { EditRecord, EditRequest } from '../edit/types.js';
import { applyEdit, computeEdit, layerStats, listEdits, revertEdit, romeHparams } from '../edit/index.js';
import { subControl, type JobControl } from '../util/jobs.js';
import type {
  EditComputeOptions,
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
    async run(model, p, control) {
      if (!p.dataset) {
        throw new FactLensError('INVALID_ARGUMENT', 'eval/run needs a dataset: a CounterFact-format file on the engine machine', {
          field: 'dataset',
        });
      }
      const file = path.resolve(p.dataset);
      if (!fs.existsSync(file)) throw new FactLensError('FILE_MISSING', `dataset ${file} does not exist`, { file, field: 'dataset' });
      let records: unknown[];
      const text = readRegularText(file, 'dataset');
      try {
        records = JSON.parse(text) as unknown[];
      } catch {
        // Never quote the file: on a socket engine the client may not be allowed to read it.
        throw new FactLensError('INVALID_ARGUMENT', `${file} is not a JSON dataset (expected an array of CounterFact records)`, { file, field: 'dataset' });
      }
      if (!Array.isArray(records)) throw new FactLensError('INVALID_ARGUMENT', `${file}: expected a JSON array of records`, { file });
      const batch = p.batch ?? 1;
      const wiring = wireMethod(p.method ?? 'rome', { layers: p.layers ?? (p.layer !== undefined ? [p.layer] : undefined), batch, control, model });
      const r = await evaluateCounterFact(model, records, { ...(wiring.opts as EditLoopOptions<CounterFactCase>), batch, limit: p.limit }, control);
      const { per_record: _perRecord, ...summary } = r as CounterFactResult & { per_record?: unknown };
      return { method: p.method ?? 'rome', dataset: file, model: model.name, ...summary };
    },
  },
};

/** Why a method is unavailable in this build (for errors and initialize). */
export function unavailableMethods(f: Features = FEATURES): Record<string, string> {
  const out: Record<string, string> = {};
  const why = (what: string) => `${what} is not available in this engine build`;
  if (!f.edit) for (const m of ['edit/apply', 'edit/revert', 'edit/list']) out[m] = why('editing');
  if (!f.stats) out['stats/compute'] = why('statistics');
  if (!f.eval) out['eval/run'] = why('evaluation');
  return out;
}
