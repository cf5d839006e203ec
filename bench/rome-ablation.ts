/**
 * ROME configuration screen on CounterFact dev records (issue #15): for each record, the keys
 * and ONE v* per (layer, clamp, steps) configuration, then every update formula built from that
 * same v* (they differ only in u and the scale of v_r), each applied, measured (ES/PS/NS, exact
 * match on the edit prompt = the verdict `took`) and reverted. v* is the expensive part (~20
 * forward/backward passes); the formulas cost one probability test each, so one pass over the
 * records compares them all on identical v* vectors.
 *
 *   node --import tsx bench/rome-ablation.ts --layer 3 --clamp 4 --steps 20 --from 0 --to 60 \
 *     [--stats-samples N] [--out bench/data/rome-ablation/NAME.jsonl]
 *
 * Writes one JSON line per record (per-formula metrics and diagnostics) so tables can be
 * rebuilt and runs extended; bench/rome-ablation-summary.ts prints the table.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from '../engine/model/load.js';
import { romeHparams, statsTokens } from '../engine/edit/hparams.js';
import { layerStats } from '../engine/edit/stats.js';
import { contextTemplates } from '../engine/edit/templates.js';
import { computeVStar, leftVector, multiKeyUpdate, prepareRequest, rightVector, romeKeys, type RomeUpdate } from '../engine/edit/rome.js';
import { parseCounterFactRecord, isSkipped } from '../engine/eval/counterfact.js';
import { measureUpdate } from './rome-ablation-measure.js';
import { dot } from '../engine/edit/linalg.js';
import { nullSpace } from '../engine/edit/nullspace.js';
import { TINYWORLD } from '../test/helpers/golden.js';

const { values } = parseArgs({
  options: {
    layer: { type: 'string', default: '3' },
    clamp: { type: 'string', default: '4' },
    steps: { type: 'string', default: '20' },
    from: { type: 'string', default: '0' },
    to: { type: 'string', default: '60' },
    'stats-samples': { type: 'string' },
    dataset: { type: 'string', default: path.join(TINYWORLD, 'counterfact-dev.json') },
    out: { type: 'string' },
    formulas: { type: 'string', default: 'consistent,reference,keys,keys+subject,keys+subject+null,keys+subject@grow,keys+subject#n26046' },
  },
});

const layer = Number(values.layer);
const clamp = Number(values.clamp);
const steps = Number(values.steps);
const from = Number(values.from);
const to = Number(values.to);
const statsSamples = values['stats-samples'] ? Number(values['stats-samples']) : undefined;
const formulas = values.formulas!.split(',');
const out =
  values.out ?? path.join('bench', 'data', 'rome-ablation', `L${layer}-c${clamp}-s${steps}${statsSamples ? `-n${statsSamples}` : ''}-v3.jsonl`);

async function main(): Promise<void> {
  const model = await loadModel({});
  const records = JSON.parse(fs.readFileSync(values.dataset!, 'utf8')) as unknown[];
  const base = await romeHparams(model, { layer });
  const hp = { ...base, clampNormFactor: clamp, vNumGradSteps: steps };
  // The engine's default statistics for this model (50·f tokens where no reference
  // hyperparameters exist) unless --stats-samples names a document count.
  const stats = await layerStats(model, layer, { samples: statsSamples, ...statsTokens(base, statsSamples, model.config.dMlp) });
  const templates = contextTemplates(model, {}).templates;
  const fewer = new Map<number, Awaited<ReturnType<typeof layerStats>>>();
  const statsFor = async (n: number) => {
    if (!fewer.has(n)) fewer.set(n, await layerStats(model, layer, { samples: n }));
    return fewer.get(n)!;
  };
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const done = new Set<number>();
  if (fs.existsSync(out)) {
    for (const line of fs.readFileSync(out, 'utf8').split('\n')) if (line.trim()) done.add((JSON.parse(line) as { index: number }).index);
  }
  console.error(`layer ${layer} clamp ${clamp} steps ${steps}; stats ${stats.count} tokens (${stats.documents} docs); → ${out}`);
  for (let i = from; i < Math.min(to, records.length); i++) {
    if (done.has(i)) continue;
    const c = parseCounterFactRecord(records[i], i, model);
    if (isSkipped(c)) continue;
    const t0 = performance.now();
    const req = prepareRequest(model, c.request);
    const keys = romeKeys(model, layer, req, templates);
    const v4 = await computeVStar(model, layer, req, templates, hp);
    const last4 = v4.steps[v4.steps.length - 1];
    // Adaptive radius: when v* misses (exp(−NLL) < 0.5 at the reference radius), once more from
    // scratch at twice the radius; variants named "…@grow" use that v*.
    const grow = Math.exp(-last4.nll) < 0.5 ? await computeVStar(model, layer, req, templates, { ...hp, clampNormFactor: 2 * clamp }) : v4;
    const { u } = leftVector(keys.kBar, stats);
    const row: Record<string, unknown> = {
      index: i,
      case_id: c.caseId,
      subject_first: c.request.prompt.startsWith('{}'),
      target_tokens: req.targetIds.length,
      v_target_prob: last4.targetProb,
      v_nll: last4.nll,
      v_nll_grown: grow !== v4 ? grow.steps[grow.steps.length - 1].nll : null,
      v_steps: v4.steps.length,
      delta_norm: Math.hypot(...v4.delta),
      target_init_norm: Math.hypot(...v4.targetInit),
      kbare_over_kbar: dot(keys.kBare, u) / dot(keys.kBar, u),
      v_seconds: v4.seconds + (grow !== v4 ? grow.seconds : 0),
    };
    for (const full of formulas) {
      // "name@grow": the grown-radius v*; "name#nN": statistics from N documents only.
      const [spec, docsAt] = full.split('#n');
      const st = docsAt ? await statsFor(Number(docsAt)) : stats;
      const [name, at] = spec.split('@');
      const v = at === 'grow' ? grow : v4;
      const delta = Float64Array.from(v.vStar, (x, j) => x - keys.mBare[j]);
      let upd: RomeUpdate;
      const uFor = st === stats ? u : leftVector(keys.kBar, st).u;
      if (name === 'consistent' || name === 'reference') upd = rightVector(model, layer, keys, uFor, v.vStar, name);
      else if (name.startsWith('keys')) {
        let all = keys.all;
        if (name.includes('+subject') && !c.request.prompt.startsWith('{}')) {
          // The subject alone after each template's prefix: relation-free keys.
          all = [...all, ...romeKeys(model, layer, { ...req, prompt: '{}' }, templates).all];
        }
        const ridge = /ridge([0-9.e-]+)/.exec(name);
        upd = multiKeyUpdate(all, st, delta, ridge ? Number(ridge[1]) : undefined, name.includes('+null') ? nullSpace(st) : null);
      } else throw new Error(`unknown formula ${name}`);
      row[full] = measureUpdate(model, c, layer, upd, `abl-${i}-${full}`);
    }
    row.seconds = (performance.now() - t0) / 1000;
    fs.appendFileSync(out, JSON.stringify(row) + '\n');
    const brief = formulas.map((f) => {
      const r = row[f] as { ES: number; PS: number | null; NS: number | null };
      return `${f} ${r.ES}/${r.PS?.toFixed(2)}/${r.NS?.toFixed(2)}`;
    });
    console.error(`#${i} ${(row.seconds as number).toFixed(1)}s p*=${(row.v_target_prob as number).toFixed(2)} ${brief.join('  ')}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
