/**
 * Which edit function the evaluation loop calls for a method name: shared by `factlens eval`
 * and the engine's eval/run request.
 */
import type { LoadedModel } from '../model/load.js';
import * as edit from '../edit/index.js';
import { computeFT, defaultEpsilon } from '../edit/ft.js';
import type { EditRequest } from '../edit/types.js';
import type { EditLoopOptions, EvalCase } from './loop.js';
import type { JobControl } from '../util/jobs.js';

export const METHODS = ['rome', 'memit', 'ft', 'ft-l', 'none'] as const;
export type EvalMethod = (typeof METHODS)[number];

interface EditWiring<C extends EvalCase & { request: EditRequest }> {
  opts: Pick<EditLoopOptions<C>, 'edit' | 'editBatch'>;
  label: string;
}

/** The edit functions for a method (every method is registered by engine/edit/index.ts, imported here). */
export function wireMethod<C extends EvalCase & { request: EditRequest }>(
  method: EvalMethod,
  p: {
    layers?: number[];
    epsilon?: number;
    batch: number;
    control: JobControl;
    model?: LoadedModel;
    statsSamples?: number;
    /** ROME's formula (rome-spec §2.8). */
    formula?: EditRequest['formula'];
    /** ROME/MEMIT: AlphaEdit's null-space projection. */
    nullSpace?: boolean;
    /** ROME/MEMIT v* overrides (clamp radius, steps). */
    hparams?: { clampNormFactor?: number; vNumGradSteps?: number; vStepGrowth?: number };
  },
): EditWiring<C> {
  const layers = p.layers;
  const editOpts = {
    ...(p.statsSamples !== undefined ? { statsSamples: p.statsSamples } : {}),
    ...(p.hparams ? { hparams: p.hparams } : {}),
  };
  const req = (c: C, m: EditRequest['method']): EditRequest => ({
    ...c.request,
    method: m,
    ...(layers ? { layers } : {}),
    ...(m === 'rome' && p.formula ? { formula: p.formula } : {}),
    ...((m === 'rome' || m === 'memit') && p.nullSpace ? { nullSpace: true } : {}),
  });
  switch (method) {
    case 'none':
      return { opts: {}, label: 'unedited model' };
    case 'ft':
    case 'ft-l': {
      const constrained = method === 'ft-l';
      return {
        opts: { edit: (m, c) => computeFT(m, req(c, method), { constrained, epsilon: p.epsilon }, p.control) },
        label: constrained ? `FT+L (ε ${p.epsilon ?? (p.model ? defaultEpsilon(p.model.config) : 'default')})` : 'FT',
      };
    }
    case 'rome':
    case 'memit': {
      if (method === 'memit' && p.batch > 1) {
        return {
          opts: { editBatch: (m, cs) => edit.computeEditBatch(m, cs.map((c) => req(c, 'memit')), p.control, editOpts) },
          label: `MEMIT (${p.batch} edits at once${p.nullSpace ? ', null space' : ''})`,
        };
      }
      return {
        opts: { edit: (m, c) => edit.computeEdit(m, req(c, method), p.control, editOpts) },
        label: (method === 'rome' ? `ROME (${p.formula ?? 'default'} formula)` : 'MEMIT') + (p.nullSpace ? ' + null space' : ''),
      };
    }
  }
}

