/** Padding ragged token rows into a rectangular batch with mask and positions. */

export type PadSide = 'left' | 'right';

export interface PaddedBatch {
  ids: number[][];
  /** 1 for real tokens, 0 for padding. */
  mask: number[][];
  /** Position ids: 0.. over real tokens, so left and right padding give the same numbers. */
  positions: number[][];
  lengths: number[];
  /** Index of each row's first real token (non-zero only with left padding). */
  offsets: number[];
  side: PadSide;
  width: number;
}

export function padBatch(rows: number[][], side: PadSide = 'right', padId = 0): PaddedBatch {
  if (rows.length === 0) throw new Error('padBatch: no rows');
  const width = Math.max(...rows.map((r) => r.length));
  const ids: number[][] = [];
  const mask: number[][] = [];
  const positions: number[][] = [];
  const offsets: number[] = [];
  for (const r of rows) {
    const pad = width - r.length;
    const off = side === 'left' ? pad : 0;
    const rowIds = new Array<number>(width).fill(padId);
    const rowMask = new Array<number>(width).fill(0);
    const rowPos = new Array<number>(width).fill(0);
    for (let i = 0; i < r.length; i++) {
      rowIds[off + i] = r[i];
      rowMask[off + i] = 1;
      rowPos[off + i] = i;
    }
    ids.push(rowIds);
    mask.push(rowMask);
    positions.push(rowPos);
    offsets.push(off);
  }
  return { ids, mask, positions, lengths: rows.map((r) => r.length), offsets, side, width };
}

/** Index (within the padded row) of the last real token of each row. */
export function lastIndices(b: PaddedBatch): number[] {
  return b.lengths.map((len, r) => b.offsets[r] + len - 1);
}
