/**
 * The trace webview, rendered in headless Chromium from the built bundle
 * (dist/webviews/trace.js) under the extension's CSP, fed a recorded trace
 * (test/fixtures/trace-*.json, made by the engine) through the same messages the host sends.
 * Real DOM checks: three charts, starred subject tokens, header values, colour floor,
 * tooltips, re-run / export requests, state restore, no CSP violation.
 *
 * Needs /usr/bin/chromium (test/e2e/setup.sh installs it); skipped without it unless
 * FACTLENS_REQUIRE_CHROMIUM=1 (npm run test:e2e sets it).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { chromiumPath, CHROMIUM_ARGS, ensureWebviewBundle, ROOT, serveWebview, type WebviewServer } from './helpers/browser.js';
import type { TraceResult } from '../engine/protocol/trace.js';
import type { NotificationMessage, ViewToHost as ViewMessage } from '../webviews/shared/channel.js';
import type { TraceResultNote, TraceView } from '../webviews/trace/protocol.js';

type TraceResultMessage = NotificationMessage<typeof TraceResultNote>;
type ViewToHost = ViewMessage<TraceView>;

const chromium = chromiumPath();
const required = !!process.env.FACTLENS_REQUIRE_CHROMIUM;
const skip = !chromium && !required ? 'Chromium is not installed (bash test/e2e/setup.sh)' : false;
const SHOTS = path.join(ROOT, 'test-output', 'screenshots');

const fixture = (name: string) => JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', name), 'utf8')) as TraceResult;
const alafield = fixture('trace-alafield.json');
const france = fixture('trace-france.json');
// A misspelt fact the model does not know ("The captial of [Frnace] is"): its verdict is 'meaningless'.
const frnace = fixture('trace-frnace.json');

function resultMessage(r: TraceResult, runId = 1): TraceResultMessage {
  return {
    type: 'trace/result',
    runId,
    input: { prompt: r.prompt, subject: r.subject, source: 'capitals.prompts:9' },
    settings: { samples: r.samples, noise: '3sigma', window: r.window },
    engine: { model: 'tinyworld', backend: r.backend, nLayer: r.scores.hidden![0].length },
    result: r,
  };
}

describe('trace webview (headless Chromium, built bundle)', { skip }, () => {
  let browser: Browser;
  let server: WebviewServer;
  const violations: string[] = [];
  const consoleErrors: string[] = [];

  before(async () => {
    if (!chromium) throw new Error('FACTLENS_REQUIRE_CHROMIUM is set but Chromium is not installed');
    const bundle = ensureWebviewBundle('trace');
    server = await serveWebview(bundle);
    const { chromium: pw } = await import('playwright-core');
    browser = await pw.launch({ executablePath: chromium, args: CHROMIUM_ARGS, headless: true });
    fs.mkdirSync(SHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  async function open(theme = 'dark', width = 1280): Promise<Page> {
    const page = await browser.newPage({ viewport: { width, height: 900 } });
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    // tsx keeps function names with a __name() helper that callbacks passed to evaluate() carry along.
    await page.addInitScript({ content: 'window.__name = (f) => f;' });
    await page.exposeFunction('__cspViolation', (s: string) => violations.push(s));
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) =>
        (window as unknown as { __cspViolation(s: string): void }).__cspViolation(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`),
      );
    });
    await page.goto(`${server.url}?theme=${theme}`);
    await page.waitForSelector('fl-trace-view');
    return page;
  }

  async function show(page: Page, r: TraceResult): Promise<void> {
    await page.evaluate((m) => window.postMessage(m, '*'), resultMessage(r));
    await waitForCharts(page);
  }

  async function waitForCharts(page: Page): Promise<void> {
    await page.waitForFunction(() => {
      const view = document.querySelector('fl-trace-view');
      const maps = view?.shadowRoot?.querySelectorAll('fl-heatmap') ?? [];
      return maps.length === 3 && [...maps].every((m) => m.shadowRoot?.querySelector('.chart svg .mark-rect.role-mark path, .chart svg .mark-rect.role-mark rect'));
    });
  }

  /** What the page shows, gathered inside it (shadow roots included). */
  async function snapshot(page: Page) {
    return page.evaluate(() => {
      const view = document.querySelector('fl-trace-view')!.shadowRoot!;
      const maps = [...view.querySelectorAll('fl-heatmap')];
      const field = (f: string) => view.querySelector(`[data-field="${f}"]`)?.textContent?.trim() ?? null;
      return {
        prompt: view.querySelector('h1.prompt')?.textContent?.replace(/\s+/g, ' ').trim(),
        subjectHighlight: view.querySelector('h1.prompt .subject')?.textContent,
        answer: field('answer'),
        clean: field('clean'),
        corrupted: field('corrupted'),
        backend: field('backend'),
        model: field('model'),
        time: field('time'),
        samples: field('samples'),
        window: field('window'),
        charts: maps.map((m) => {
          const root = m.shadowRoot!;
          const svg = root.querySelector('.chart svg')!;
          const cells = [...svg.querySelectorAll('.mark-rect.role-mark path, .mark-rect.role-mark rect')];
          const texts = [...svg.querySelectorAll('text')].map((t) => t.textContent ?? '');
          return {
            kind: m.getAttribute('kind'),
            cells: cells.length,
            fills: cells.map((c) => c.getAttribute('fill')),
            texts,
            boldLabels: [...svg.querySelectorAll('.role-axis-label text')].filter((t) => t.getAttribute('font-weight') === 'bold').map((t) => t.textContent),
          };
        }),
      };
    });
  }

  test('three heatmaps, starred subject tokens, header values', async () => {
    const page = await open('dark');
    await show(page, alafield);
    const s = await snapshot(page);
    const T = alafield.tokens.length;
    const L = alafield.scores.hidden![0].length;

    assert.equal(s.prompt, alafield.prompt);
    assert.equal(s.subjectHighlight, 'Alafield');
    assert.equal(s.answer, JSON.stringify(alafield.answer.token));
    assert.equal(s.clean, alafield.clean_prob.toFixed(4));
    assert.equal(s.corrupted, alafield.corrupted_prob.toFixed(4));
    assert.equal(s.backend, alafield.backend);
    assert.equal(s.model, 'tinyworld');
    assert.match(s.time!, /^\d+(\.\d+)? (ms|s)$/);
    assert.equal(s.samples, String(alafield.samples));
    assert.equal(s.window, String(alafield.window));

    assert.deepEqual(s.charts.map((c) => c.kind), ['hidden', 'mlp', 'attn']);
    for (const c of s.charts) {
      assert.equal(c.cells, T * L, `${c.kind}: one cell per token and layer`);
      // Tokens down: every token is a label, the subject's three tokens starred and bold.
      const [a, b] = alafield.subject_range;
      for (let i = 0; i < T; i++) {
        // SVG text drops the leading space of GPT-2 tokens (" headquarters"), as in the paper.
        const label = `${alafield.tokens[i].trim()}${i >= a && i < b ? '*' : ''}`;
        assert.ok(c.texts.includes(label), `${c.kind}: label ${JSON.stringify(label)} in ${JSON.stringify(c.texts)}`);
      }
      assert.deepEqual(c.boldLabels, alafield.tokens.slice(a, b).map((t) => `${t.trim()}*`));
      assert.ok(!c.texts.includes(`${alafield.tokens[0].trim()}*`), 'a non-subject token is not starred');
      // Layers across: 0..L-1 on the x axis.
      assert.ok(c.texts.includes('0') && c.texts.includes(String(L - 1)));
    }
    await page.screenshot({ path: path.join(SHOTS, 'webview-dark.png'), fullPage: true });
    await page.close();
  });

  test('paper colour families, and the corrupted probability is the colour floor', async () => {
    const page = await open('dark');
    await show(page, alafield);
    const s = await snapshot(page);
    const rgb = (f: string | null) => {
      const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(f ?? '') ?? /rgb\((\d+),\s*(\d+),\s*(\d+)\)/.exec(f ?? '');
      assert.ok(m, `a colour: ${f}`);
      return m![0].startsWith('#') ? [1, 2, 3].map((i) => parseInt(m![i], 16)) : [1, 2, 3].map((i) => Number(m![i]));
    };
    const darkest = (fills: Array<string | null>) => fills.map(rgb).sort((x, y) => x[0] + x[1] + x[2] - (y[0] + y[1] + y[2]))[0];
    const [h, m, a] = s.charts.map((c) => darkest(c.fills));
    assert.ok(h[2] > h[1] && h[0] > h[1], `hidden is purple: ${h}`);
    assert.ok(m[1] > m[0] && m[1] > m[2], `MLP is green: ${m}`);
    assert.ok(a[0] > a[1] && a[0] > a[2], `attention is red: ${a}`);
    // The legend starts at the corrupted probability (the cells at or below it are the lightest).
    for (const c of s.charts) {
      assert.ok(c.texts.includes(alafield.corrupted_prob.toFixed(3).replace(/0+$/, '')), `${c.kind} legend floor ${alafield.corrupted_prob.toFixed(3)} in ${c.texts.join('|')}`);
    }
    await page.close();
  });

  test('tooltips carry exact values', async () => {
    const page = await open('dark');
    await show(page, alafield);
    // Hover the hidden-state cell of the last subject token at layer 3.
    const [, b] = alafield.subject_range;
    const t = b - 1;
    const l = 3;
    const L = alafield.scores.hidden![0].length;
    // Cells are drawn in data order: token by token, layer by layer.
    const box = await page.evaluate(
      (i) => {
        const map = document.querySelector('fl-trace-view')!.shadowRoot!.querySelector('fl-heatmap[kind="hidden"]')!;
        const r = [...map.shadowRoot!.querySelectorAll('.mark-rect.role-mark path, .mark-rect.role-mark rect')][i].getBoundingClientRect();
        return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
      },
      t * L + l,
    );
    await page.mouse.move(box.x, box.y);
    await page.waitForFunction(() => {
      const map = document.querySelector('fl-trace-view')!.shadowRoot!.querySelector('fl-heatmap[kind="hidden"]')!;
      return map.shadowRoot!.querySelector('.tooltip.visible');
    });
    const tip = await page.evaluate(() => {
      const map = document.querySelector('fl-trace-view')!.shadowRoot!.querySelector('fl-heatmap[kind="hidden"]')!;
      return map.shadowRoot!.querySelector('.tooltip')!.textContent!;
    });
    const p = alafield.scores.hidden![t][l];
    assert.ok(tip.includes(p.toPrecision(6)), `exact value ${p.toPrecision(6)} in ${tip}`);
    assert.ok(tip.includes(`token ${t} ${JSON.stringify(alafield.tokens[t])} (subject)`), tip);
    assert.ok(tip.includes(`layer ${l}`), tip);
    await page.close();
  });

  test('re-run and export send typed requests; the result is kept as state and restored', async () => {
    const page = await open('light');
    await show(page, france);
    // Change samples and re-run.
    await page.locator('fl-trace-view vscode-textfield#samples input').fill('3');
    await page.locator('fl-trace-view vscode-button#rerun').click();
    // Export SVG and PNG.
    await page.locator('fl-trace-view vscode-button#export-svg').click();
    await page.locator('fl-trace-view vscode-button#export-png').click();
    await page.waitForFunction(() => (window as unknown as { __sent: ViewToHost[] }).__sent.filter((m) => m.type === 'export').length === 2);
    const sent = await page.evaluate(() => (window as unknown as { __sent: ViewToHost[] }).__sent);
    assert.equal(sent[0].type, 'ready');
    const rerun = sent.find((m) => m.type === 'rerun');
    assert.ok(rerun && rerun.type === 'rerun');
    assert.deepEqual(rerun.settings, { samples: 3, noise: '3sigma', window: france.window });
    assert.equal(rerun.input.prompt, france.prompt);
    assert.equal(typeof rerun.requestId, 'number');
    const exports = sent.filter((m) => m.type === 'export');
    const svg = exports.find((m) => m.type === 'export' && m.format === 'svg');
    const png = exports.find((m) => m.type === 'export' && m.format === 'png');
    assert.ok(svg?.type === 'export' && svg.data.startsWith('<svg') && svg.data.includes('France*'), 'SVG with the starred subject');
    assert.equal(svg.fileName, 'trace-France.svg');
    assert.ok(png?.type === 'export' && png.data.startsWith('data:image/png;base64,') && png.data.length > 5000, 'a PNG data URL');
    const ids = sent.filter((m) => m.type !== 'ready').map((m) => (m as { requestId: number }).requestId);
    assert.equal(new Set(ids).size, ids.length, 'request ids are unique');
    // Save the exported PNG so it can be looked at.
    fs.writeFileSync(path.join(SHOTS, 'webview-export.png'), Buffer.from(png.data.split(',')[1], 'base64'));
    await page.screenshot({ path: path.join(SHOTS, 'webview-light.png'), fullPage: true });

    // Hidden and shown again: VS Code reloads the page; the view restores from getState.
    await page.reload();
    await waitForCharts(page);
    const s = await snapshot(page);
    assert.equal(s.answer, JSON.stringify(france.answer.token));
    assert.equal(s.charts.length, 3);
    await page.close();
  });

  test('a trace that shows nothing says so in a banner, and its colours are not stretched', async () => {
    assert.equal(frnace.quality.verdict, 'meaningless');
    const page = await open('dark');
    await show(page, frnace);
    const banner = await page.evaluate(() => {
      const el = document.querySelector('fl-trace-view')!.shadowRoot!.querySelector('.quality');
      return el ? { verdict: el.getAttribute('data-verdict'), items: [...el.querySelectorAll('li')].map((li) => li.textContent ?? '') } : null;
    });
    assert.ok(banner, 'a quality banner');
    assert.equal(banner.verdict, 'meaningless');
    assert.deepEqual(banner.items, frnace.quality.reasons);
    assert.ok(banner.items.some((r) => /not above the corrupted/.test(r)), banner.items.join(' | '));
    // The colour scale spans at least 0.1 above the corrupted p (the scores move by ~0.01), so the
    // cells stay near the light end: the darkest is lighter than a strong trace's darkest.
    const [lo, hi] = frnace.quality.color_domain;
    assert.ok(hi - lo >= 0.1 - 1e-12, `colour domain ${lo}..${hi}`);
    const s = await snapshot(page);
    const lum = (f: string | null) => {
      const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(f ?? '') ?? /rgb\((\d+),\s*(\d+),\s*(\d+)\)/.exec(f ?? '');
      assert.ok(m, `a colour: ${f}`);
      const c = m![0].startsWith('#') ? [1, 2, 3].map((i) => parseInt(m![i], 16)) : [1, 2, 3].map((i) => Number(m![i]));
      return c[0] + c[1] + c[2];
    };
    const weakDarkest = Math.min(...s.charts[0].fills.map(lum));
    await show(page, alafield);
    const strong = await snapshot(page);
    assert.equal(alafield.quality.verdict, 'ok');
    const strongDarkest = Math.min(...strong.charts[0].fills.map(lum));
    assert.ok(weakDarkest > strongDarkest + 150, `weak trace's darkest cell ${weakDarkest} vs a strong trace's ${strongDarkest}`);
    assert.equal(await page.evaluate(() => !!document.querySelector('fl-trace-view')!.shadowRoot!.querySelector('.quality')), false, 'no banner on a strong trace');
    await show(page, frnace);
    await page.screenshot({ path: path.join(SHOTS, 'webview-trace-weak.png'), fullPage: true });
    await page.close();
  });

  test('the charts use the panel width, and a tooltip at the right edge stays inside the view', async () => {
    const page = await open('dark', 1280);
    await show(page, alafield);
    const widths = await page.evaluate(() =>
      [...document.querySelector('fl-trace-view')!.shadowRoot!.querySelectorAll('fl-heatmap')].map((m) => m.shadowRoot!.querySelector('.chart svg')!.getBoundingClientRect()),
    );
    const used = Math.max(...widths.map((r) => r.right)) - Math.min(...widths.map((r) => r.left));
    assert.ok(used > 0.8 * 1280, `the three charts span ${used} of 1280 px`);
    // Hover the last layer of the first token in the rightmost chart (attention), by its legend.
    const L = alafield.scores.attn![0].length;
    const box = await page.evaluate((i) => {
      const map = document.querySelector('fl-trace-view')!.shadowRoot!.querySelector('fl-heatmap[kind="attn"]')!;
      const r = [...map.shadowRoot!.querySelectorAll('.mark-rect.role-mark path, .mark-rect.role-mark rect')][i].getBoundingClientRect();
      return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
    }, L - 1);
    await page.mouse.move(box.x, box.y);
    await page.waitForFunction(() =>
      document.querySelector('fl-trace-view')!.shadowRoot!.querySelector('fl-heatmap[kind="attn"]')!.shadowRoot!.querySelector('.tooltip.visible'),
    );
    const tip = await page.evaluate(() => {
      const r = document.querySelector('fl-trace-view')!.shadowRoot!.querySelector('fl-heatmap[kind="attn"]')!.shadowRoot!.querySelector('.tooltip')!.getBoundingClientRect();
      return { left: r.left, right: r.right, width: window.innerWidth };
    });
    assert.ok(tip.right <= tip.width && tip.left >= 0, `tooltip ${tip.left}..${tip.right} inside 0..${tip.width}`);
    await page.screenshot({ path: path.join(SHOTS, 'webview-tooltip-edge.png') });
    await page.close();
  });

  test('progress, error and high-contrast rendering', async () => {
    const page = await open('high-contrast');
    const input = { prompt: 'The capital of Atlantis is', subject: 'Atlantis' };
    await page.evaluate((input) => {
      window.postMessage({ type: 'trace/started', runId: 7, input, settings: { samples: 10, noise: '3sigma', window: 2 } }, '*');
      window.postMessage({ type: 'trace/progress', runId: 7, fraction: 0.5, message: 'restoring' }, '*');
    }, input);
    await page.waitForFunction(() => document.querySelector('fl-trace-view')?.shadowRoot?.querySelector('.progress')?.textContent?.includes('50%'));
    await page.locator('fl-trace-view vscode-button#cancel').click();
    await page.waitForFunction(() => (window as unknown as { __sent: ViewToHost[] }).__sent.some((m) => m.type === 'cancel'));
    const cancel = await page.evaluate(() => (window as unknown as { __sent: ViewToHost[] }).__sent.find((m) => m.type === 'cancel'));
    assert.deepEqual({ type: cancel!.type, runId: (cancel as { runId: number }).runId }, { type: 'cancel', runId: 7 });
    await page.evaluate((input) => {
      window.postMessage({ type: 'trace/error', runId: 7, input, code: 'SUBJECT_NOT_FOUND', message: 'the subject "Atlantis" does not occur' }, '*');
    }, input);
    await page.waitForFunction(() => document.querySelector('fl-trace-view')?.shadowRoot?.querySelector('.error-box'));
    const err = await page.evaluate(() => document.querySelector('fl-trace-view')!.shadowRoot!.querySelector('.error-box')!.textContent);
    assert.match(err!, /does not occur/);
    await show(page, alafield);
    await page.screenshot({ path: path.join(SHOTS, 'webview-high-contrast.png'), fullPage: true });
    await page.close();
  });

  test('no CSP violation and no console error', () => {
    assert.deepEqual(violations, []);
    assert.deepEqual(consoleErrors, []);
  });
});
