/**
 * Stacked edits (issue #15, `factlens eval --sequential`): the records' edits are computed and
 * applied one after another — each against the model holding every earlier edit, none restored
 * in between (MEMIT with --batch B: B records at once, chunk after chunk) — then every record is
 * measured on the final model, as after the last edit. `pre` is measured on the unedited model
 * before the first edit. `around` runs on the unedited model before the first edit and on the
 * fully edited model after the last (retention). Afterwards every edit is reverted and each
 * touched matrix checked bit-identical to the original.
 */
import { FactLensError, isFactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { applyEdit, revertEdit } from '../edit/apply.js';
import type { EditRecord } from '../edit/types.js';
import type { Job } from '../util/jobs.js';
import { bytes, sameBytes, type EditLoopOptions, type EvalCase, type LoopItem, type LoopResult, type SkippedRecord } from './loop.js';

/** Records measured per forward batch (the measurement is independent per record). */
const MEASURE_CHUNK = 16;

export async function runSequentialLoop<C extends EvalCase, M>(
  model: LoadedModel,
  cases: C[],
  measure: (model: LoadedModel, cases: C[]) => M[],
  opts: EditLoopOptions<C>,
  job: Job,
  around: (phase: 'before' | 'after') => void = () => {},
  describe: (done: number, total: number, c: C | null) => string = (d, t) => `edit ${d}/${t}`,
): Promise<LoopResult<C, M>> {
  if (!opts.edit && !opts.editBatch) throw new FactLensError('INVALID_ARGUMENT', 'sequential evaluation needs an editing method', { field: 'method' });
  const measureAll = (cs: C[]): M[] => {
    const out: M[] = [];
    for (let s = 0; s < cs.length; s += MEASURE_CHUNK) out.push(...measure(model, cs.slice(s, s + MEASURE_CHUNK)));
    return out;
  };
  const size = Math.max(1, Math.floor(opts.batch ?? 1));
  const pre = measureAll(cases);
  around('before');
  const snapshots = new Map<number, { w: Uint8Array; b?: Uint8Array }>();
  const applied: EditRecord[] = [];
  const skipped: SkippedRecord[] = [];
  const perCase = new Map<C, { seconds: number; edits: EditRecord[] }>();
  const apply = (r: EditRecord) => {
    for (const d of r.deltas) {
      if (snapshots.has(d.layer)) continue;
      const mo = model.weights.blocks[d.layer]?.mlpOut;
      if (mo) snapshots.set(d.layer, { w: bytes(mo.w), b: mo.b ? bytes(mo.b) : undefined });
    }
    applyEdit(model, r);
    applied.push(r);
  };
  let items: Array<LoopItem<C, M>> = [];
  try {
    for (let s = 0; s < cases.length; s += size) {
      const chunk = cases.slice(s, s + size);
      await job.checkpoint(s / cases.length, `${describe(s + 1, cases.length, chunk[0])}: editing (${applied.length} applied)`);
      const t0 = performance.now();
      let recs: EditRecord[];
      try {
        const r = opts.editBatch && size > 1 ? await opts.editBatch(model, chunk) : await opts.edit!(model, chunk[0]);
        recs = Array.isArray(r) ? r : [r];
      } catch (e) {
        if (isFactLensError(e) && e.code !== 'CANCELLED') {
          for (const c of chunk) skipped.push({ index: c.index, case_id: c.caseId, reason: `edit failed: ${e.message}` });
          continue;
        }
        throw e;
      }
      recs.forEach(apply);
      const sec = (performance.now() - t0) / 1000 / chunk.length;
      for (const c of chunk) perCase.set(c, { seconds: sec, edits: recs });
    }
    const kept = cases.filter((c) => perCase.has(c));
    await job.checkpoint(0.99, `measuring ${kept.length} records after ${applied.length} edits`);
    const post = measureAll(kept);
    around('after');
    const preOf = new Map(cases.map((c, i) => [c, pre[i]]));
    items = kept.map((c, i) => ({ case: c, pre: preOf.get(c)!, post: post[i], editSeconds: perCase.get(c)!.seconds, edits: perCase.get(c)!.edits }));
  } finally {
    for (let i = applied.length - 1; i >= 0; i--) revertEdit(model, applied[i].id);
  }
  let restoreChecks = 0;
  for (const [layer, snap] of snapshots) {
    const mo = model.weights.blocks[layer].mlpOut;
    if (!sameBytes(bytes(mo.w), snap.w) || (snap.b && (!mo.b || !sameBytes(bytes(mo.b), snap.b)))) {
      throw new FactLensError('INVALID_ARGUMENT', `restoring layer ${layer} after ${applied.length} stacked edits did not give the original weights back bit for bit`, {
        field: 'revert',
        layer,
      });
    }
    restoreChecks += snap.b ? 2 : 1;
  }
  const total = items.reduce((a, it) => a + it.editSeconds, 0);
  await job.checkpoint(1, `${items.length} stacked edits evaluated`);
  return { items, skipped, secondsPerEdit: items.length ? total / items.length : 0, restoreChecks };
}
