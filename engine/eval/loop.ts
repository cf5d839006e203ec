/**
 * The edit-evaluation loop shared by CounterFact and zsRE (rome-spec §3, §5.5): for each
 * record, or each chunk of `batch` records,
 *   1. measure on the current (unedited) model ("pre"),
 *   2. compute the edit(s) and apply them — one edit per record applied in turn, each computed
 *      against the model already holding the chunk's earlier edits (the reference's sequential
 *      ROME), or one `editBatch` call for the whole chunk (MEMIT),
 *   3. measure again ("post"),
 *   4. revert every applied record (reverse order) and check that each touched MLP output
 *      matrix and bias is bit-identical to its state before the chunk.
 * The model is restored even when a step throws (cancellation included). An edit that fails
 * with a FactLensError other than CANCELLED (e.g. the subject cannot be located) skips its
 * record, reported with its index; other errors are bugs and propagate.
 */
import type * as tf from '@tensorflow/tfjs-core';
import { FactLensError, isFactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { applyEdit, revertEdit } from '../edit/apply.js';
import type { EditRecord } from '../edit/types.js';
import type { Job } from '../util/jobs.js';

export interface SkippedRecord {
  /** Position of the record in the input (0-based). */
  index: number;
  case_id?: number | string;
  reason: string;
}

export interface EvalCase {
  index: number;
  caseId?: number | string;
}

export type EditFn<C> = (model: LoadedModel, rec: C) => Promise<EditRecord | EditRecord[]>;
export type EditBatchFn<C> = (model: LoadedModel, recs: C[]) => Promise<EditRecord | EditRecord[]>;

export interface EditLoopOptions<C> {
  /** Computes the edit(s) for one record. Absent: no edit (post = pre). */
  edit?: EditFn<C>;
  /** Computes the edits of a whole chunk at once (MEMIT); takes precedence over `edit`. */
  editBatch?: EditBatchFn<C>;
  /** Default: engine/edit/apply.ts applyEdit. */
  apply?: (model: LoadedModel, rec: EditRecord) => void | Promise<void>;
  /** Default: engine/edit/apply.ts revertEdit(model, rec.id). */
  revert?: (model: LoadedModel, rec: EditRecord) => void | Promise<void>;
  /** Records per chunk (default 1). */
  batch?: number;
  /** Compare the restored weights with a snapshot (default true). */
  verifyRestore?: boolean;
}

export interface LoopItem<C, M> {
  case: C;
  pre: M;
  post: M;
  /** Wall time of computing and applying this record's edit (a chunk's time is shared equally). */
  editSeconds: number;
  edits: EditRecord[];
}

export interface LoopResult<C, M> {
  items: Array<LoopItem<C, M>>;
  skipped: SkippedRecord[];
  secondsPerEdit: number;
  /** Matrices (and biases) checked bit-identical after restore. */
  restoreChecks: number;
}

/**
 * The per-record rows of a loop's result (for --per-record files). A batch's record (MEMIT)
 * serves every case of its chunk; its info is listed once, on the first of them.
 */
export function perRecordRows<C extends EvalCase, M>(loop: LoopResult<C, M>) {
  const seen = new Set<string>();
  return loop.items.map((it) => {
    const fresh = it.edits.filter((e) => !seen.has(e.id));
    fresh.forEach((e) => seen.add(e.id));
    return {
      index: it.case.index,
      ...(it.case.caseId !== undefined ? { case_id: it.case.caseId } : {}),
      edit_seconds: it.editSeconds,
      // The verdict of the edit that serves this case (a batch's: every request took).
      ...(it.edits.length ? verdictOf(it.edits) : {}),
      ...(fresh.length ? { edit_info: fresh.map((e) => e.info) } : {}),
      pre: it.pre,
      post: it.post,
    };
  });
}

function verdictOf(edits: EditRecord[]): { took: boolean; reason?: string } {
  const took = edits.every((e) => e.took !== false);
  const reason = edits.map((e) => e.reason).filter((r): r is string => !!r).join(' | ');
  return reason ? { took, reason } : { took };
}

interface Snapshot {
  w: Uint8Array;
  b?: Uint8Array;
}

export function bytes(t: tf.Tensor): Uint8Array {
  const d = t.dataSync() as Float32Array;
  return new Uint8Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength));
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const asArray = (r: EditRecord | EditRecord[]): EditRecord[] => (Array.isArray(r) ? r : [r]);

export async function runEditLoop<C extends EvalCase, M>(
  model: LoadedModel,
  cases: C[],
  measure: (model: LoadedModel, cases: C[]) => M[],
  opts: EditLoopOptions<C>,
  job: Job,
  describe: (done: number, total: number, c: C | null) => string = (d, t) => `record ${d}/${t}`,
): Promise<LoopResult<C, M>> {
  const apply = opts.apply ?? ((m: LoadedModel, r: EditRecord) => applyEdit(m, r));
  const revert = opts.revert ?? ((m: LoadedModel, r: EditRecord) => void revertEdit(m, r.id));
  const size = Math.max(1, Math.floor(opts.batch ?? 1));
  const verify = opts.verifyRestore !== false;
  const editing = !!(opts.edit || opts.editBatch);
  const items: Array<LoopItem<C, M>> = [];
  const skipped: SkippedRecord[] = [];
  let editSeconds = 0;
  let edited = 0;
  let restoreChecks = 0;
  let done = 0;

  for (let start = 0; start < cases.length; start += size) {
    let chunk = cases.slice(start, start + size);
    await job.checkpoint(done / cases.length, describe(done, cases.length, chunk[0]));
    const pre = measure(model, chunk);
    if (!editing) {
      chunk.forEach((c, i) => items.push({ case: c, pre: pre[i], post: pre[i], editSeconds: 0, edits: [] }));
      done += chunk.length;
      continue;
    }

    const applied: EditRecord[] = [];
    const snapshots = new Map<number, Snapshot>();
    const perCase = new Map<C, { seconds: number; edits: EditRecord[] }>();
    const applyAll = async (recs: EditRecord[]) => {
      for (const r of recs) {
        if (verify) {
          for (const d of r.deltas) {
            if (snapshots.has(d.layer)) continue;
            const mo = model.weights.blocks[d.layer]?.mlpOut;
            if (mo) snapshots.set(d.layer, { w: bytes(mo.w), b: mo.b ? bytes(mo.b) : undefined });
          }
        }
        await apply(model, r);
        applied.push(r);
      }
    };
    let post: M[];
    try {
      if (opts.editBatch) {
        const t0 = performance.now();
        const recs = asArray(await opts.editBatch(model, chunk));
        await applyAll(recs);
        const s = (performance.now() - t0) / 1000;
        for (const c of chunk) perCase.set(c, { seconds: s / chunk.length, edits: recs });
      } else {
        const ok: C[] = [];
        for (const c of chunk) {
          await job.checkpoint((done + ok.length) / cases.length, `${describe(done + ok.length, cases.length, c)}: editing`);
          const t0 = performance.now();
          let recs: EditRecord[];
          try {
            recs = asArray(await opts.edit!(model, c));
          } catch (e) {
            if (isFactLensError(e) && e.code !== 'CANCELLED') {
              skipped.push({ index: c.index, case_id: c.caseId, reason: `edit failed: ${e.message}` });
              continue;
            }
            throw e;
          }
          await applyAll(recs);
          perCase.set(c, { seconds: (performance.now() - t0) / 1000, edits: recs });
          ok.push(c);
        }
        if (ok.length !== chunk.length) {
          const keep = new Set(ok);
          const preKept = pre.filter((_, i) => keep.has(chunk[i]));
          pre.splice(0, pre.length, ...preKept);
          chunk = ok;
        }
      }
      post = chunk.length ? measure(model, chunk) : [];
    } finally {
      for (let i = applied.length - 1; i >= 0; i--) await revert(model, applied[i]);
    }
    for (const [layer, snap] of snapshots) {
      const mo = model.weights.blocks[layer].mlpOut;
      const okW = sameBytes(bytes(mo.w), snap.w);
      const okB = !snap.b || (!!mo.b && sameBytes(bytes(mo.b), snap.b));
      if (!okW || !okB) {
        throw new FactLensError(
          'INVALID_ARGUMENT',
          `restoring layer ${layer} after evaluating records ${chunk.map((c) => c.index).join(', ')} did not give the original weights back bit for bit`,
          { field: 'revert', layer },
        );
      }
      restoreChecks += snap.b ? 2 : 1;
    }
    chunk.forEach((c, i) => {
      const pc = perCase.get(c)!;
      items.push({ case: c, pre: pre[i], post: post[i], editSeconds: pc.seconds, edits: pc.edits });
      editSeconds += pc.seconds;
      edited++;
    });
    done += size;
  }
  await job.checkpoint(1, describe(cases.length, cases.length, null));
  return { items, skipped, secondsPerEdit: edited ? editSeconds / edited : 0, restoreChecks };
}
