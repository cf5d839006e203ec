/**
 * The "v* retried with twice the steps when it misses" row of the ROME ablation (issue #15),
 * added to a finished bench/rome-ablation.ts run without recomputing it: a record whose v*
 * reached its target (exp(−NLL) ≥ 0.5) keeps the same v*, so its result is the base variant's
 * (the update is a deterministic function of v*, the keys and the statistics); a record whose
 * v* missed gets v* again with `--growth` × the steps, the base variant's update from it, and is
 * measured. Writes one row per record with the variant `<base>@steps`.
 *
 *   node --import tsx bench/rome-ablation-steps.ts --from bench/data/rome-ablation/L3-c4-s20-v3.jsonl \
 *     [--base keys+subject] [--growth 2] [--out FILE]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from '../engine/model/load.js';
import { romeHparams, statsTokens } from '../engine/edit/hparams.js';
import { layerStats } from '../engine/edit/stats.js';
import { contextTemplates } from '../engine/edit/templates.js';
import { computeVStar, multiKeyUpdate, prepareRequest, romeKeys, updateKeys } from '../engine/edit/rome.js';
import { parseCounterFactRecord, isSkipped } from '../engine/eval/counterfact.js';
import { measureUpdate } from './rome-ablation-measure.js';
import { TINYWORLD } from '../test/helpers/golden.js';

const { values } = parseArgs({
  options: {
    from: { type: 'string' },
    base: { type: 'string', default: 'keys+subject' },
    growth: { type: 'string', default: '2' },
    layer: { type: 'string', default: '3' },
    clamp: { type: 'string', default: '4' },
    steps: { type: 'string', default: '20' },
    dataset: { type: 'string', default: path.join(TINYWORLD, 'counterfact-dev.json') },
    out: { type: 'string' },
  },
});

async function main(): Promise<void> {
  if (!values.from) throw new Error('--from FILE (a rome-ablation.ts output) is required');
  if (values.base !== 'keys+subject' && values.base !== 'keys') throw new Error('--base must be keys or keys+subject');
  const variant = `${values.base}@steps`;
  const out = values.out ?? values.from.replace(/\.jsonl$/, '-steps.jsonl');
  const rows = fs
    .readFileSync(values.from, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown> & { index: number; v_nll: number });
  const done = new Set<number>();
  if (fs.existsSync(out)) for (const l of fs.readFileSync(out, 'utf8').split('\n')) if (l.trim()) done.add((JSON.parse(l) as { index: number }).index);
  const model = await loadModel({});
  const records = JSON.parse(fs.readFileSync(values.dataset!, 'utf8')) as unknown[];
  const layer = Number(values.layer);
  const base = await romeHparams(model, { layer });
  const hp = { ...base, clampNormFactor: Number(values.clamp), vNumGradSteps: Number(values.steps) };
  const stats = await layerStats(model, layer, statsTokens(base, undefined, model.config.dMlp));
  const templates = contextTemplates(model, {}).templates;
  const steps = Math.round(Number(values.growth) * hp.vNumGradSteps);
  for (const row of rows) {
    if (done.has(row.index)) continue;
    const cell = row[values.base!] as Record<string, number>;
    let result: Record<string, unknown>;
    if (Math.exp(-row.v_nll) >= 0.5) {
      result = { index: row.index, retried: false, [variant]: cell };
    } else {
      const c = parseCounterFactRecord(records[row.index], row.index, model);
      if (isSkipped(c)) continue;
      const req = prepareRequest(model, c.request);
      const keys = romeKeys(model, layer, req, templates);
      const v = await computeVStar(model, layer, req, templates, { ...hp, vNumGradSteps: steps });
      const delta = Float64Array.from(v.vStar, (x, j) => x - keys.mBare[j]);
      const upd = multiKeyUpdate(updateKeys(model, layer, req, templates, keys, values.base === 'keys' ? 'keys' : 'subject-keys'), stats, delta);
      const m = measureUpdate(model, c, layer, upd, `abl-steps-${row.index}`);
      const last = v.steps[v.steps.length - 1];
      result = {
        index: row.index,
        retried: true,
        v_nll_steps: last.nll,
        [variant]: m,
      };
      console.error(`#${row.index} retried with ${steps} steps: p* ${Math.exp(-last.nll).toExponential(2)} ES ${m.ES} PS ${m.PS} NS ${m.NS}`);
    }
    fs.appendFileSync(out, JSON.stringify(result) + '\n');
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
