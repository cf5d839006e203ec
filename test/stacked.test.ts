/**
 * Stacked edits and AlphaEdit's null-space projection (issue #15): the symmetric eigensolver,
 * the projector from the key statistics, null-space ROME and MEMIT updates, the retention
 * sample, and `evaluateCounterFact(..., { sequential: true })` checked against applying the same
 * edits by hand. Real edits on the embedded tinyworld model; statistics from 1,000 corpus
 * documents in a fresh cache folder.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LoadedModel } from '../engine/model/load.js';
import { applyEdit, computeEdit, layerStats, listEdits, revertAllEdits, romeEditParts, computeEditBatch } from '../engine/edit/index.js';
import { symmetricEigen } from '../engine/edit/eigen.js';
import { nullSpace, project } from '../engine/edit/nullspace.js';
import { dot, norm } from '../engine/edit/linalg.js';
import { evaluateCounterFact, measureCounterFact, parseCounterFactRecord, isSkipped, type CounterFactCase } from '../engine/eval/counterfact.js';
import { retentionAccuracy, retentionSample } from '../engine/eval/retention.js';
import { wireMethod } from '../engine/eval/methods.js';
import { main } from '../engine/cli/main.js';
import { TEST_BACKEND } from './helpers/model.js';
import { TINYWORLD } from './helpers/golden.js';
import { editSession } from './helpers/edit-session.js';
import { slowTest } from './helpers/tier.js';

let m: LoadedModel;
editSession('stacked', (x) => (m = x));
const LAYER = 3;
const SAMPLES = 1000;
const CF_PATH = path.join(TINYWORLD, 'counterfact-dev.json');
const CF = JSON.parse(fs.readFileSync(CF_PATH, 'utf8')) as unknown[];


describe('symmetric eigendecomposition', () => {
  test('A v = λ v, orthonormal vectors, ascending values', () => {
    const n = 48;
    const g = Array.from({ length: n * n }, (_, i) => Math.sin(i * 1.3) + ((i * 7919) % 17) / 17);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += g[i * n + k] * g[j * n + k];
        a[i * n + j] = s;
      }
    const { values, vectors } = symmetricEigen(a, n);
    let resid = 0;
    let orth = 0;
    for (let j = 0; j < n; j++)
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += a[i * n + k] * vectors[k * n + j];
        resid = Math.max(resid, Math.abs(s - values[j] * vectors[i * n + j]));
      }
    for (let p = 0; p < n; p++)
      for (let q = 0; q < n; q++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += vectors[k * n + p] * vectors[k * n + q];
        orth = Math.max(orth, Math.abs(s - (p === q ? 1 : 0)));
      }
    assert.ok(resid < 1e-9, `residual ${resid}`);
    assert.ok(orth < 1e-10, `orthogonality ${orth}`);
    for (let i = 1; i < n; i++) assert.ok(values[i] >= values[i - 1]);
  });
});

describe('null-space projection', () => {
  test('P is a projector onto low-energy directions of C', async () => {
    const st = await layerStats(m, LAYER, { samples: SAMPLES });
    const ns = nullSpace(st);
    assert.ok(ns.rank > 0 && ns.rank < ns.f, `rank ${ns.rank}`);
    assert.ok(ns.energy < 0.1, `energy kept ${ns.energy}`);
    const x = Float64Array.from({ length: ns.f }, (_, i) => Math.cos(i * 0.37));
    const px = project(ns, x);
    const ppx = project(ns, px);
    assert.ok(norm(ppx.map((v, i) => v - px[i])) < 1e-9 * norm(px), 'P² = P');
    // xᵀ C x over the projected part ≤ cutoff·‖Px‖² (only small-eigenvalue directions remain).
    const f = ns.f;
    let q = 0;
    for (let i = 0; i < f; i++) {
      let s = 0;
      for (let j = 0; j < f; j++) s += st.sum[i * f + j] * px[j];
      q += px[i] * s;
    }
    q /= st.count;
    assert.ok(q <= ns.cutoff * dot(px, px) * (1 + 1e-9), `Rayleigh quotient ${q / dot(px, px)} above cutoff ${ns.cutoff}`);
    // Cached: the same object for the same statistics, and on disk beside them.
    assert.equal(nullSpace(st), ns);
    assert.ok(fs.existsSync(`${st.file}.null-0.25`));
  });

  slowTest('null-space ROME: every template key still gets δ, the update lies in the null space', async () => {
    const req = { prompt: '{} is located in the country of', subject: 'Paris', target: 'Japan', layers: [LAYER], formula: 'keys' as const };
    const parts = await romeEditParts(m, { ...req, nullSpace: true }, {}, { statsSamples: SAMPLES });
    const ns = nullSpace(parts.stats!);
    const { u, vR } = parts.update;
    const pu = project(ns, u);
    assert.ok(norm(pu.map((x, i) => x - u[i])) < 1e-8, 'u is in the null space');
    const delta = parts.v.delta;
    for (const k of parts.keys.all) {
      const s = dot(k, u);
      // (k·u)·v_r ≈ δ for every key the v* optimisation used (ridge 1e-3).
      const err = norm(vR.map((x, j) => s * x - delta[j])) / norm(delta);
      assert.ok(err < 0.02, `key change off by ${err}`);
    }
    assert.equal(parts.record.request.nullSpace, true);
    assert.equal(parts.record.info.null_space_rank, ns.rank);
  });

  slowTest('null-space MEMIT: a batch of two edits, deltas inside the null space', async () => {
    const reqs = [0, 1].map((i) => {
      const c = parseCounterFactRecord(CF[i], i, m) as CounterFactCase;
      return { ...c.request, layers: [LAYER], method: 'memit' as const, nullSpace: true };
    });
    const rec = await computeEditBatch(m, reqs, {}, { statsSamples: SAMPLES });
    assert.equal(rec.request.nullSpace, true);
    assert.match(String(rec.info.null_space_ranks), /^\d+$/);
    assert.equal(typeof rec.took, 'boolean');
  });
});

describe('retention and sequential evaluation', () => {
  test('the retention sample is fixed, skips edited subjects, and the unedited model knows most of it', () => {
    const a = retentionSample(m, ['France'], { n: 200 });
    const b = retentionSample(m, ['France'], { n: 200 });
    assert.deepEqual(a.facts, b.facts);
    assert.equal(a.facts.length, 200);
    assert.ok(a.facts.every((f) => f.subject !== 'France'));
    const acc = retentionAccuracy(m, a.facts);
    assert.ok(acc > 85, `accuracy ${acc}`);
  });

  slowTest('--sequential: every record measured after the last edit; retention before/after; weights restored', async () => {
    const opts = wireMethod('rome', { batch: 1, control: {}, model: m, statsSamples: SAMPLES, layers: [LAYER] });
    const r = await evaluateCounterFact(m, CF, { ...opts.opts, limit: 3, genEvery: 0, perRecord: true, sequential: true, retention: { n: 200 } });
    assert.equal(r.sequential, true);
    assert.equal(r.n, 3);
    assert.equal(r.retention!.facts, 200);
    assert.ok(r.retention!.before > 85);
    assert.ok(Number.isFinite(r.retention!.after));
    assert.ok(r.restore_checks >= 1);
    assert.equal(listEdits(m).length, 0, 'all edits reverted');
    // The same three edits applied by hand give the same post metrics.
    const cases = [0, 1, 2].map((i) => parseCounterFactRecord(CF[i], i, m)).filter((c): c is CounterFactCase => !isSkipped(c));
    for (const row of r.per_record!) assert.equal(typeof row.took, 'boolean');
    const recs = [];
    try {
      for (const c of cases) {
        const rec = await computeEdit(m, { ...c.request, layers: [LAYER] }, {}, { statsSamples: SAMPLES });
        applyEdit(m, rec);
        recs.push(rec);
      }
      const post = measureCounterFact(m, cases);
      post.forEach((p, i) => {
        const got = r.per_record![i].post.metrics;
        assert.equal(got.ES, p.metrics.ES);
        assert.ok(Math.abs(got.EM - p.metrics.EM) < 1e-5, `EM ${got.EM} vs ${p.metrics.EM}`);
      });
    } finally {
      revertAllEdits(m);
    }
  });

  test('factlens eval: --sequential and --null-space combinations that make no sense are usage errors', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const io = { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) }, env: process.env };
    const backend = TEST_BACKEND ? ['--backend', TEST_BACKEND] : [];
    let code = await main(['eval', '--dataset', CF_PATH, '--method', 'none', '--sequential', ...backend], io);
    assert.equal(code, 2, 'usage error');
    assert.match(err.join(''), /--sequential needs an editing method/);
    code = await main(['eval', '--dataset', CF_PATH, '--method', 'ft', '--null-space', ...backend], io);
    assert.equal(code, 2);
    assert.match(err.join(''), /--null-space applies to --method rome or memit only/);
  });

  slowTest('factlens eval --sequential --null-space prints the retention line and the label', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const io = { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) }, env: process.env };
    const backend = TEST_BACKEND ? ['--backend', TEST_BACKEND] : [];
    const code = await main(
      ['eval', '--dataset', CF_PATH, '--limit', '1', '--layer', String(LAYER), '--stats-samples', String(SAMPLES), '--gen-every', '0', '--sequential', '--null-space', ...backend],
      io,
    );
    assert.equal(code, 0, err.join(''));
    assert.match(out.join(''), /retention \(greedy first-token accuracy on 1000 facts no edit touches\): \d+\.\d before the first edit → \d+\.\d after the last/);
    assert.match(out.join(''), /null space/);
  });
});
