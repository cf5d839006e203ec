/** Assertions on the engine's structured errors, shared by the test files. */
import assert from 'node:assert/strict';
import { FactLensError } from '../../engine/errors.js';

/** Asserts `fn` throws a FactLensError with `code` whose message mentions every string in `mentions` and whose data has `data`'s entries. */
export function assertFails(fn: () => unknown, code: string, mentions: string[], data: Record<string, unknown> = {}): FactLensError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof FactLensError, `expected FactLensError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  for (const m of mentions) assert.ok(caught.message.includes(m), `message should mention ${m}: ${caught.message}`);
  for (const [k, v] of Object.entries(data)) assert.deepEqual(caught.data[k], v, `data.${k}`);
  return caught;
}

/** Asserts the promise from `fn` rejects with a FactLensError of `code`, then runs `check` on it. */
export function expectError(fn: () => Promise<unknown>, code: string, check: (e: FactLensError) => void = () => {}) {
  return assert.rejects(fn, (e: unknown) => {
    assert.ok(e instanceof FactLensError, `expected a FactLensError, got ${e}`);
    assert.equal(e.code, code, e.message);
    check(e);
    return true;
  });
}
