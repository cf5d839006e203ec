/**
 * Edits as values: a request, the method that computed it, and the weight deltas it adds.
 * The wire types live in the protocol (engine/protocol/edit.ts); the engine's edit modules use them.
 */
export type { DenseDelta, EditMethod, EditRecord, EditRequest, RankOneDelta, RomeFormula, WeightDelta } from '../protocol/edit.js';
export { ROME_FORMULAS } from '../protocol/edit.js';
