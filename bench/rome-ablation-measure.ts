/**
 * One cell of the ROME ablation (bench/rome-ablation*.ts): a rank-one update applied to the
 * model, the CounterFact record measured (ES / PS / NS, `took` = exact match on the edit
 * prompt), and the update reverted (bit-identical weights).
 */
import type { LoadedModel } from '../engine/model/load.js';
import { applyEdit, revertEdit } from '../engine/edit/apply.js';
import { modelContentHash } from '../engine/edit/hash.js';
import type { RomeUpdate } from '../engine/edit/rome.js';
import type { EditRecord } from '../engine/edit/types.js';
import { measureCounterFact, type CounterFactCase } from '../engine/eval/counterfact.js';

export interface AblationCell {
  ES: number;
  PS: number | null;
  NS: number | null;
  took: number;
  dw: number;
  kdu: number;
}

export function measureUpdate(model: LoadedModel, c: CounterFactCase, layer: number, upd: RomeUpdate, id: string): AblationCell {
  const rec: EditRecord = {
    id,
    request: c.request,
    method: 'rome',
    layers: [layer],
    deltas: [{ kind: 'rank-one', layer, u: Array.from(upd.u), v: Array.from(upd.vR) }],
    info: {},
    modelHash: modelContentHash(model),
    createdAt: new Date().toISOString(),
  };
  applyEdit(model, rec);
  try {
    const m = measureCounterFact(model, [c])[0].metrics;
    return { ES: m.ES, PS: m.PS, NS: m.NS, took: m.rewrite_acc, dw: upd.deltaNorm, kdu: upd.kDotU };
  } finally {
    revertEdit(model, rec.id);
  }
}
