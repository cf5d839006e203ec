/**
 * The validation schema of every request's params, each typed against the protocol's params
 * type (validate.ts SchemaOf): a field renamed, retyped, added or dropped in engine/protocol/
 * without the same change here does not compile. Limits (lengths, ranges) are the engine's
 * guard against requests that would exhaust it.
 */
import { FactLensError } from '../errors.js';
import {
  BACKEND_NAMES,
  EDIT_METHODS,
  ROME_FORMULAS,
  TRACE_KINDS,
  type DenseDelta,
  type EditApplyParams,
  type EditComputeOptions,
  type EditComputeParams,
  type EditHparamOverrides,
  type EditReapplyParams,
  type EditRecord,
  type EditRequest,
  type EditProbeParams,
  type EditRevertParams,
  type EditSaveParams,
  type EvalRunParams,
  type Fact,
  type InitializeParams,
  type Method,
  type ModelLoadParams,
  type ParamsOf,
  type PredictParams,
  type PredictBatchParams,
  type SpecificityCheckParams,
  type SpecificityPrompt,
  type RankOneDelta,
  type StatsComputeParams,
  type TraceOptions,
  type TraceParams,
  type TraceAverageParams,
  type WeightDelta,
  type WithProgress,
} from '../protocol/index.js';
import * as v from './validate.js';

const progressToken = v.opt(v.str({ max: 200 }));
const withProgress: v.SchemaOf<WithProgress> = { progressToken };
const promptCheck = v.str({ min: 1, max: 100_000 });

const traceOptions: v.SchemaOf<TraceOptions> = {
  subject: v.opt(v.str({ max: 10_000 })),
  subjectRange: v.opt(v.tuple(v.int({ min: 0 }), v.int({ min: 0 }))),
  kinds: v.opt(v.arr(v.oneOf(...TRACE_KINDS), { min: 1, max: 3 })),
  samples: v.opt(v.int({ min: 1, max: 1000 })),
  noise: v.opt(v.either(v.oneOf('3sigma' as const), v.num({ min: 0 }))),
  noiseValues: v.opt(v.arr(v.arr(v.arr(v.num(), { max: 65_536 }), { max: 4096 }), { max: 1000 })),
  noiseSubjects: v.opt(v.arr(v.str({ min: 1, max: 1000 }), { max: 100_000 })),
  window: v.opt(v.int({ min: 1, max: 1000 })),
  seed: v.opt(v.int()),
  expect: v.opt(v.str({ min: 1, max: 1000 })),
  sever: v.opt(v.arr(v.oneOf('mlp' as const, 'attn' as const), { max: 2 })),
  method: v.opt(v.oneOf('fast' as const, 'naive' as const)),
};

export const editRequest = v.objOf<EditRequest>({
  prompt: v.str({ min: 1, max: 10_000 }),
  subject: v.str({ min: 1, max: 1000 }),
  target: v.str({ min: 1, max: 1000 }),
  targetTrue: v.opt(v.str({ max: 1000 })),
  method: v.opt(v.oneOf(...EDIT_METHODS)),
  layers: v.opt(v.arr(v.int({ min: 0, max: 10_000 }), { min: 1, max: 1000 })),
  formula: v.opt(v.oneOf(...ROME_FORMULAS)),
  nullSpace: v.opt(v.bool()),
  corpus: v.opt(v.str({ min: 1, max: 4096 })),
});

const hparams = v.objOf<EditHparamOverrides>({
  vNumGradSteps: v.opt(v.int({ min: 1, max: 10_000 })),
  vLr: v.opt(v.num({ min: 0 })),
  vWeightDecay: v.opt(v.num({ min: 0 })),
  clampNormFactor: v.opt(v.num({ min: 0 })),
  klFactor: v.opt(v.num({ min: 0 })),
  mom2Adjustment: v.opt(v.bool()),
  mom2NSamples: v.opt(v.int({ min: 1 })),
  mom2UpdateWeight: v.opt(v.num({ min: 0 })),
});

const editOptions = v.objOf<EditComputeOptions>({
  statsSamples: v.opt(v.int({ min: 1 })),
  statsNpz: v.opt(v.str({ min: 1, max: 4096 })),
  templateSeed: v.opt(v.int()),
  facts: v.opt(v.str({ min: 1, max: 4096 })),
  hparams: v.opt(hparams),
});

const rankOne = v.objOf<RankOneDelta>({
  kind: v.oneOf('rank-one' as const),
  layer: v.int({ min: 0 }),
  u: v.arr(v.num(), { max: 1 << 20 }),
  v: v.arr(v.num(), { max: 1 << 20 }),
});
const dense = v.objOf<DenseDelta>({
  kind: v.oneOf('dense' as const),
  layer: v.int({ min: 0 }),
  shape: v.tuple(v.int({ min: 1 }), v.int({ min: 1 })),
  delta: v.str(),
  biasDelta: v.opt(v.str()),
});
const deltaCheck: v.Check<WeightDelta> = (value, p) => {
  const kind = (value as { kind?: unknown } | null)?.kind;
  if (kind === 'rank-one') return rankOne(value, p);
  if (kind === 'dense') return dense(value, p);
  throw new FactLensError('INVALID_ARGUMENT', `${p}.kind must be "rank-one" or "dense"`, { field: `${p}.kind` });
};

export const editRecord = v.objOf<EditRecord>({
  id: v.str({ min: 1, max: 200 }),
  request: editRequest,
  requests: v.opt(v.arr(editRequest, { max: 100_000 })),
  method: v.oneOf(...EDIT_METHODS),
  layers: v.arr(v.int({ min: 0 }), { max: 1000 }),
  deltas: v.arr(deltaCheck, { min: 1, max: 1000 }),
  info: v.record({ maxKeys: 1000 }),
  modelHash: v.str({ max: 200 }),
  createdAt: v.str({ max: 100 }),
  took: v.opt(v.bool()),
  reason: v.opt(v.str({ max: 100_000 })),
});

const editCompute = v.objOf<EditComputeParams>({ request: editRequest, options: v.opt(editOptions), ...withProgress });
const editReapply = v.objOf<EditReapplyParams>({ record: editRecord, force: v.opt(v.bool()), ...withProgress });

/** edit/apply takes a request to compute or a record to re-apply: `record` decides which. */
const editApply: v.Check<EditApplyParams> = (value, p) => {
  const o = value as Record<string, unknown> | null;
  const hasRecord = o !== null && typeof o === 'object' && !Array.isArray(o) && Object.hasOwn(o, 'record');
  return hasRecord ? editReapply(value, p) : editCompute(value, p);
};

const fact = v.objOf<Fact>({
  subject: v.str({ min: 1, max: 1000 }),
  prompt: v.str({ min: 1, max: 10_000 }),
  object: v.str({ min: 1, max: 1000 }),
  relation_id: v.opt(v.str({ max: 100 })),
});

/** One schema per method, each exactly that method's params. */
export const SCHEMAS: { [M in Method]: v.Check<ParamsOf<M>> } = {
  initialize: v.objOf<InitializeParams>({
    protocolVersion: v.str({ min: 1, max: 20 }),
    clientName: v.opt(v.str({ max: 200 })),
    clientVersion: v.opt(v.str({ max: 100 })),
    token: v.opt(v.str({ max: 1000 })),
  }),
  'model/load': v.objOf<ModelLoadParams>({
    dir: v.opt(v.str({ min: 1, max: 4096 })),
    backend: v.opt(v.oneOf(...BACKEND_NAMES)),
    ...withProgress,
  }),
  'model/info': v.none(),
  predict: v.objOf<PredictParams>({ prompt: promptCheck, k: v.opt(v.int({ min: 1, max: 1000 })) }),
  'predict/batch': v.objOf<PredictBatchParams>({
    prompts: v.arr(promptCheck, { min: 1, max: 10_000 }),
    k: v.opt(v.int({ min: 1, max: 100 })),
    targets: v.opt(v.arr(v.str({ min: 1, max: 1000 }), { max: 100 })),
    unedited: v.opt(v.bool()),
  }),
  'specificity/check': v.objOf<SpecificityCheckParams>({
    prompts: v.arr(
      v.objOf<SpecificityPrompt>({ prompt: promptCheck, subject: v.opt((x, p) => (x === null ? null : v.str({ max: 10_000 })(x, p))) }),
      { min: 1, max: 10_000 },
    ),
    k: v.opt(v.int({ min: 1, max: 20 })),
  }),
  trace: v.objOf<TraceParams>({ prompt: promptCheck, ...traceOptions, ...withProgress }),
  traceAverage: v.objOf<TraceAverageParams>({
    factsFile: v.opt(v.str({ min: 1, max: 4096 })),
    facts: v.opt(v.arr(fact, { min: 1, max: 100_000 })),
    limit: v.opt(v.int({ min: 1 })),
    ...traceOptions,
    ...withProgress,
  }),
  'edit/apply': editApply,
  'edit/revert': v.objOf<EditRevertParams>({ id: v.str({ min: 1, max: 200 }) }),
  'edit/list': v.none(),
  'edit/probe': v.objOf<EditProbeParams>({
    prompts: v.arr(v.str({ min: 1, max: 10_000 }), { min: 1, max: 256 }),
    targets: v.arr(v.str({ min: 1, max: 1000 }), { max: 16 }),
    k: v.opt(v.int({ min: 1, max: 100 })),
    tokens: v.opt(v.int({ min: 0, max: 200 })),
    unedited: v.opt(v.bool()),
  }),
  'edit/save': v.objOf<EditSaveParams>({ dir: v.str({ min: 1, max: 4096 }) }),
  'eval/run': v.objOf<EvalRunParams>({
    edits: v.opt(v.arr(v.str({ min: 1, max: 200 }), { max: 10_000 })),
    dataset: v.opt(v.str({ min: 1, max: 4096 })),
    limit: v.opt(v.int({ min: 1 })),
    method: v.opt(v.oneOf(...EDIT_METHODS, 'none' as const)),
    layer: v.opt(v.int({ min: 0 })),
    layers: v.opt(v.arr(v.int({ min: 0 }), { max: 1000 })),
    batch: v.opt(v.int({ min: 1 })),
    sequential: v.opt(v.bool()),
    nullSpace: v.opt(v.bool()),
    formula: v.opt(v.oneOf(...ROME_FORMULAS)),
    perRecord: v.opt(v.bool()),
    ...withProgress,
  }),
  'stats/compute': v.objOf<StatsComputeParams>({
    layers: v.opt(v.arr(v.int({ min: 0, max: 10_000 }), { min: 1, max: 1000 })),
    corpus: v.opt(v.str({ min: 1, max: 4096 })),
    samples: v.opt(v.int({ min: 1 })),
    batchTokens: v.opt(v.int({ min: 1 })),
    cache: v.opt(v.bool()),
    ...withProgress,
  }),
  'jobs/list': v.none(),
  shutdown: v.none(),
};
