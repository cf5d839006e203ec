/**
 * The edit-diff webview, rendered in headless Chromium from the built bundle
 * (dist/webviews/edit.js) under the extension's CSP, fed recorded real edit results
 * (test/fixtures/edit-*.json, made by scripts/record-edit-fixture.ts with the engine) through
 * the messages the host sends. DOM checks: header, verdict (took / did not take, with the
 * measured reason), before → after probabilities and top tokens, the paired bars, the changed
 * words of the generations, neighbourhood prompts, the requests the buttons send, a check
 * prompt added from its reply, the reverted state, and no CSP violation.
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
import type { ViewToHost } from '../webviews/shared/channel.js';
import type { EditDiff, EditView, PromptDiff } from '../webviews/edit/protocol.js';
import { formatP } from '../webviews/edit/diff.js';

const chromium = chromiumPath();
const required = !!process.env.FACTLENS_REQUIRE_CHROMIUM;
const skip = !chromium && !required ? 'Chromium is not installed (bash test/e2e/setup.sh)' : false;
const SHOTS = path.join(ROOT, 'test-output', 'screenshots');

const fixture = (name: string) => JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', name), 'utf8')) as EditDiff;
const france = fixture('edit-france-rome.json');
const lyon = fixture('edit-lyon-portugal.json');
type Sent = ViewToHost<EditView>;

describe('edit-diff webview (headless Chromium, built bundle, recorded real edits)', { skip }, () => {
  let browser: Browser;
  let server: WebviewServer;
  const violations: string[] = [];
  const consoleErrors: string[] = [];

  before(async () => {
    if (!chromium) throw new Error('FACTLENS_REQUIRE_CHROMIUM is set but Chromium is not installed');
    server = await serveWebview(ensureWebviewBundle('edit'));
    const { chromium: pw } = await import('playwright-core');
    browser = await pw.launch({ executablePath: chromium, args: CHROMIUM_ARGS, headless: true });
    fs.mkdirSync(SHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  async function open(diff: EditDiff, theme = 'dark'): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await page.addInitScript({ content: 'window.__name = (f) => f;' });
    await page.exposeFunction('__cspViolation', (s: string) => violations.push(s));
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) =>
        (window as unknown as { __cspViolation(s: string): void }).__cspViolation(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`),
      );
    });
    await page.goto(`${server.url}?theme=${theme}`);
    await page.waitForSelector('fl-edit-view');
    await page.evaluate((d) => window.postMessage({ type: 'edit/show', diff: d }, '*'), diff);
    // Every prompt's bars drawn.
    await page.waitForFunction(
      (n) => [...(document.querySelector('fl-edit-view')?.shadowRoot?.querySelectorAll('.chart') ?? [])].filter((c) => c.querySelector('svg .mark-rect path, svg .mark-rect rect')).length === n,
      diff.prompts.length,
    );
    return page;
  }

  async function snapshot(page: Page) {
    return page.evaluate(() => {
      const root = document.querySelector('fl-edit-view')!.shadowRoot!;
      const field = (f: string, within: ParentNode = root) => within.querySelector(`[data-field="${f}"]`)?.textContent?.replace(/\s+/g, ' ').trim() ?? null;
      const verdict = root.querySelector('[data-field="verdict"]') as HTMLElement | null;
      return {
        method: field('method'),
        targetNew: field('target-new'),
        targetTrue: field('target-true'),
        status: field('status'),
        kDotU: field('k-dot-u'),
        kRatio: field('k-ratio'),
        vStar: field('v-star-p'),
        deltaW: field('delta-w'),
        verdict: verdict?.textContent?.replace(/\s+/g, ' ').trim() ?? null,
        took: verdict?.dataset.took ?? null,
        sections: [...root.querySelectorAll('section.prompt')].map((s) => ({
          kind: (s as HTMLElement).dataset.kind,
          prompt: s.querySelector('h2 .mono')?.textContent,
          pNew: [...s.querySelectorAll('[data-field="p-new"] td')].map((td) => td.textContent),
          pTrue: [...s.querySelectorAll('[data-field="p-true"] td')].map((td) => td.textContent),
          top: [...s.querySelectorAll('[data-field="top1"] td')].map((td) => td.textContent),
          marked: [...s.querySelectorAll('[data-field="gen-after"] mark')].map((m) => m.textContent),
          genAfter: s.querySelector('[data-field="gen-after"]')?.textContent ?? null,
          bars: s.querySelectorAll('.chart svg .mark-rect path, .chart svg .mark-rect rect').length,
          chartText: [...s.querySelectorAll('.chart svg text')].map((t) => t.textContent),
        })),
        revertDisabled: root.querySelector('vscode-button#revert')?.hasAttribute('disabled') ?? null,
      };
    });
  }

  test('an edit that took: header, diagnostics, verdict, before → after, bars, changed words', async () => {
    const page = await open(france);
    const s = await snapshot(page);
    assert.equal(s.method, 'ROME');
    assert.equal(s.targetNew, 'Rome');
    assert.equal(s.targetTrue, 'Paris');
    assert.equal(s.status, 'applied');
    assert.equal(s.kDotU, (france.edit.info.k_dot_u as number).toFixed(3));
    assert.equal(s.took, 'yes');
    const main = france.prompts[0];
    assert.equal(main.before.top[0].token, ' Paris', 'recorded: Paris before');
    assert.equal(main.after.top[0].token, ' Rome', 'recorded: Rome after');
    assert.match(s.verdict!, /The edit took: " Rome" is the top prediction on the edit prompt/);
    assert.match(s.verdict!, /k·u ratio \d\.\d\d/);
    assert.deepEqual(
      s.sections.map((x) => x.kind),
      france.prompts.map((p) => p.kind),
    );
    const edit = s.sections[0];
    assert.equal(edit.prompt, 'The capital of France is');
    assert.deepEqual(edit.top, ['" Paris"', '" Rome"']);
    assert.deepEqual(edit.pNew, [formatP(main.before.targets[0].prob), formatP(main.after.targets[0].prob)]);
    assert.deepEqual(edit.pTrue, [formatP(main.before.targets[1].prob), formatP(main.after.targets[1].prob)]);
    // Paired bars: one before and one after bar per token of either top-5 (zero-width bars count too).
    const tokens = new Set([...main.before.top.slice(0, 5), ...main.after.top.slice(0, 5)].map((c) => c.token));
    assert.equal(edit.bars, 2 * tokens.size);
    assert.ok(edit.chartText.includes('" Rome"') && edit.chartText.includes('" Paris"'), edit.chartText.join('|'));
    assert.equal(edit.genAfter, main.after.generation);
    assert.notEqual(main.before.generation, main.after.generation, 'recorded: the generation changed');
    assert.match(edit.marked[0] ?? '', /Rome/, `the changed words are marked: ${JSON.stringify(edit.marked)}`);
    // An unchanged generation has nothing marked.
    const same = s.sections.find((x, i) => france.prompts[i].before.generation === france.prompts[i].after.generation);
    assert.ok(same, 'recorded: a neighbourhood prompt whose generation did not change');
    assert.deepEqual(same.marked, []);
    // Neighbourhood prompts keep their answers.
    for (const [i, sec] of s.sections.entries()) {
      if (sec.kind !== 'neighborhood') continue;
      assert.equal(france.prompts[i].after.top[0].token, france.prompts[i].before.top[0].token, `${sec.prompt}: unchanged`);
    }
    await page.screenshot({ path: path.join(SHOTS, 'webview-edit-took.png'), fullPage: true });
    await page.close();
  });

  test('an edit that did not take: the verdict says so, with the measured k·u ratio and what to try', async () => {
    const page = await open(lyon, 'light');
    const s = await snapshot(page);
    assert.equal(s.took, 'no');
    assert.equal(lyon.prompts[0].after.top[0].token, ' France', 'recorded: still France after');
    assert.match(s.verdict!, /The edit did not take: " France" is still the top prediction/);
    const ratio = (lyon.edit.info.k_bare_dot_u as number) / (lyon.edit.info.k_bar_dot_u as number);
    assert.ok(ratio < 0.5, `recorded k·u ratio ${ratio}`);
    assert.ok(s.verdict!.includes(`k·u ratio ${ratio.toFixed(2)}`), s.verdict!);
    assert.match(s.verdict!, /Try the reference formula/);
    assert.equal(s.kRatio, ratio.toFixed(2));
    await page.screenshot({ path: path.join(SHOTS, 'webview-edit-did-not-take.png'), fullPage: true });
    await page.close();
  });

  test('buttons send typed requests; a check prompt is added from its reply; the reverted state', async () => {
    const page = await open(france, 'high-contrast');
    const sentOf = () => page.evaluate(() => (window as unknown as { __sent: Sent[] }).__sent);
    /** Clicks a button, waits for its request, answers it as the host would. */
    const click = async (button: string, type: Sent['type'], reply: { ok: boolean; result?: unknown; message?: string }) => {
      await page.locator(`fl-edit-view vscode-button#${button}`).click();
      await page.waitForFunction((t) => (window as unknown as { __sent: Sent[] }).__sent.some((m) => m.type === t), type);
      const m = (await sentOf()).find((x) => x.type === type) as { requestId: number };
      await page.evaluate(([id, r]) => window.postMessage({ type: 'reply', requestId: id, ...r }, '*'), [m.requestId, reply] as const);
    };
    await click('trace', 'trace', { ok: true });
    await click('save', 'save', { ok: false, message: 'the folder is not writable' });
    await page.waitForFunction(() => /not writable/.test(document.querySelector('fl-edit-view')!.shadowRoot!.querySelector('[data-field="notice"]')?.textContent ?? ''));
    await page.locator('fl-edit-view vscode-textfield#check input').fill('The capital of France is known for');
    const pd: PromptDiff = { ...france.prompts[0], prompt: 'The capital of France is known for', kind: 'check' };
    await click('add-check', 'check', { ok: true, result: pd });
    const sent = await sentOf();
    assert.equal(sent[0].type, 'ready');
    const trace = sent.find((m) => m.type === 'trace');
    assert.ok(trace && trace.type === 'trace');
    assert.deepEqual({ prompt: trace.prompt, subject: trace.subject }, { prompt: 'The capital of France is', subject: 'France' });
    assert.ok(sent.some((m) => m.type === 'save'));
    const check = sent.find((m) => m.type === 'check');
    assert.ok(check && check.type === 'check');
    assert.equal(check.id, france.edit.id);
    assert.equal(check.prompt, 'The capital of France is known for');
    const ids = sent.filter((m) => m.type !== 'ready').map((m) => (m as { requestId: number }).requestId);
    assert.equal(new Set(ids).size, ids.length, 'request ids are unique');

    // The check's reply carries its diff: a new section.
    await page.waitForFunction(() => document.querySelector('fl-edit-view')!.shadowRoot!.querySelector('section.prompt[data-kind="check"]'));

    // Reverted from elsewhere (the Edits tree): the badge and the disabled Revert button.
    await page.evaluate((id) => window.postMessage({ type: 'edit/status', id, status: 'reverted' }, '*'), france.edit.id);
    await page.waitForFunction(() => document.querySelector('fl-edit-view')!.shadowRoot!.querySelector('[data-field="status"]')?.textContent === 'reverted');
    const s = await snapshot(page);
    assert.equal(s.revertDisabled, true);
    assert.equal(s.sections.at(-1)!.kind, 'check');

    // The state survives a reload of the page (hidden and shown, or a window reload).
    await page.reload();
    await page.waitForFunction(() => document.querySelector('fl-edit-view')?.shadowRoot?.querySelector('[data-field="status"]')?.textContent === 'reverted');
    await page.close();
  });

  test('no CSP violation and no console error', () => {
    assert.deepEqual(violations, []);
    assert.deepEqual(consoleErrors, []);
  });
});
