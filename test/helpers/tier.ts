/**
 * Test tiers. `npm test` runs the fast tier: every test except the slow end-to-end numerics
 * (whole edits, evaluations and traces checked against their outcomes), which are declared
 * with `slowTest` and skipped there with a reason. `npm run test:slow` sets FACTLENS_SLOW=1 and
 * selects only them by the " [slow]" suffix of their names (--test-name-pattern); CI
 * (.ci/run) runs both tiers.
 */
import { test, type TestContext } from 'node:test';

export const SLOW = process.env.FACTLENS_SLOW === '1';

/** A test of the slow tier: named with a " [slow]" suffix, skipped unless FACTLENS_SLOW=1. */
export function slowTest(name: string, fn: (t: TestContext) => void | Promise<void>): void {
  test(`${name} [slow]`, { skip: SLOW ? false : 'slow tier: run by npm run test:slow' }, fn);
}
