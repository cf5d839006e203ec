/**
 * Fact Lens in a real VS Code (code-server) driven through Chromium: the packaged .vsix is
 * installed into a fresh profile, a copy of samples/ is the workspace, and each scenario ends
 * with a screenshot in test-output/screenshots/.
 *
 *   bash test/e2e/setup.sh && npm run test:e2e
 *
 * Named *.e2e.ts so that `npm test` (unit tests, test/**\/*.test.ts) does not pick it up.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import {
  editorLine,
  goToLine,
  launchBrowser,
  log,
  notifications,
  openFile,
  openWorkbench,
  packageVsix,
  readEnv,
  runCommand,
  screenshot,
  startCodeServer,
  traceFrame,
  type CodeServer,
} from './harness.js';

const TRACE_TIMEOUT = 180_000;

describe('Fact Lens in VS Code (code-server + Chromium)', { timeout: 900_000 }, () => {
  let server: CodeServer;
  let browser: Browser;
  let page: Page;

  before(async () => {
    const env = readEnv();
    const vsix = packageVsix();
    server = await startCodeServer(env, vsix);
    browser = await launchBrowser(env);
    page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    page.on('pageerror', (e) => log(`page error: ${e.message}`));
    await openWorkbench(page, server.url);
    log('workbench ready');
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** Waits for the trace view to show three charts for `prompt`, and `answer` when given. */
  async function waitForTrace(prompt: string, answer?: string): Promise<void> {
    const view = traceFrame(page);
    await view.locator('fl-trace-view').waitFor({ timeout: 60_000 });
    const field = view.locator('fl-trace-view [data-field="answer"]');
    const header = view.locator('fl-trace-view h1.prompt');
    const deadline = Date.now() + TRACE_TIMEOUT;
    // Done: no run in progress, and the charts are this prompt's result (not a stale one).
    const fresh = view.locator(`fl-trace-view .charts:not(.stale)[data-prompt="${prompt.replace(/"/g, '\\"')}"]`);
    const shown = async () => {
      const [h, a, n, busy] = await Promise.all([
        header.textContent({ timeout: 1000 }).catch(() => null),
        field.textContent({ timeout: 1000 }).catch(() => null),
        fresh.count(),
        view.locator('fl-trace-view .progress').count(),
      ]);
      return { h: h?.trim(), a: a?.trim(), done: n === 1 && busy === 0 };
    };
    for (let s = await shown(); s.h !== prompt || !s.done || !s.a || (answer !== undefined && s.a !== JSON.stringify(answer)); s = await shown()) {
      if (Date.now() > deadline) throw new Error(`the trace view shows ${JSON.stringify(s)}, not ${prompt} → ${answer}`);
      await page.waitForTimeout(250);
    }
    const charts = view.locator('fl-heatmap .chart svg .mark-rect.role-mark');
    const until = Date.now() + 30_000;
    while ((await charts.count()) < 3) {
      if (Date.now() > until) throw new Error(`${await charts.count()} charts drawn, expected 3`);
      await page.waitForTimeout(250);
    }
    assert.equal(await view.locator('fl-heatmap').count(), 3, 'three heatmaps');
    const starred = await view.locator('fl-heatmap[kind="hidden"] .role-axis-label text').allTextContents();
    assert.ok(starred.some((t) => t.endsWith('*')), `starred subject tokens in ${starred.join('|')}`);
  }

  test('right-click a prompt line → "Trace this prompt" → three charts and " Paris"', { timeout: 400_000 }, async () => {
    await openFile(page, 'capitals.prompts');
    // Highlighting (TextMate grammar) and CodeLens on prompt lines.
    const line = editorLine(page, 'The capital of [France] is');
    await line.waitFor();
    await page.locator('.codelens-decoration a', { hasText: 'Trace' }).first().waitFor({ timeout: 60_000 });
    const subjectColour = await line.locator('span', { hasText: /^France$/ }).first().evaluate((el) => getComputedStyle(el).color);
    // (Monaco renders spaces as no-break spaces: match with \s.)
    const plainColour = await line.locator('span', { hasText: /The\s+capital\s+of/ }).last().evaluate((el) => getComputedStyle(el).color);
    assert.notEqual(subjectColour, plainColour, 'the subject is highlighted');

    await line.click({ button: 'right' });
    const item = page.locator('.monaco-menu .action-item', { hasText: 'Fact Lens: Trace this prompt' }).first();
    await item.waitFor({ state: 'visible', timeout: 15_000 });
    await screenshot(page, 'e2e-1a-context-menu.png');
    await item.click();
    await waitForTrace('The capital of France is', ' Paris');
    // The status bar shows model and backend.
    const status = await page.locator('#factlens\\.fact-lens\\.factlens\\.engine, .statusbar-item[id*="factlens.engine"]').first().textContent();
    assert.match(status ?? '', /tinyworld · (native|webgpu|wasm|cpu|node|node-gpu)/);
    await screenshot(page, 'e2e-1b-trace-paris.png');

    // Hidden and shown again: open another file in the panel's group, then its tab again.
    await page.locator('.tabs-container .tab', { hasText: 'Trace: France' }).click();
    await page.locator('.explorer-folders-view .monaco-list-row', { hasText: 'people.prompts' }).first().dblclick();
    await page.locator('.tabs-container .tab.active', { hasText: 'people.prompts' }).first().waitFor();
    assert.equal(await page.locator('.tabs-container .tab.active', { hasText: 'Trace: France' }).count(), 0, 'the trace panel is hidden');
    await page.locator('.tabs-container .tab', { hasText: 'Trace: France' }).click();
    await waitForTrace('The capital of France is', ' Paris');
    await page.locator('.tabs-container .tab', { hasText: 'capitals.prompts' }).first().click(); // back to the first group
  });

  test('a misspelt fact the model does not know: the panel warns that the trace shows nothing', { timeout: 400_000 }, async () => {
    await openFile(page, 'unknown.prompts');
    const line = editorLine(page, 'The captial of [Frnace] is');
    await line.waitFor();
    // The extension is active once the prompt line has its CodeLens (this may be the first scenario).
    await page.locator('.codelens-decoration a', { hasText: 'Trace' }).first().waitFor({ timeout: 120_000 });
    await line.click({ button: 'right' });
    const item = page.locator('.monaco-menu .action-item', { hasText: 'Fact Lens: Trace this prompt' }).first();
    await item.waitFor({ state: 'visible', timeout: 15_000 });
    await item.click();
    // The context menu's click is sometimes lost while the menu is still animating in (no trace
    // request reaches the extension); then run the same command from the palette on that line.
    const started = await traceFrame(page)
      .locator('fl-trace-view .charts[data-prompt="The captial of Frnace is"], fl-trace-view .progress')
      .first()
      .waitFor({ timeout: 20_000 })
      .then(() => true, () => false);
    if (!started) {
      await page.keyboard.press('Escape');
      await line.click();
      await runCommand(page, 'Fact Lens: Trace this prompt');
    }
    await waitForTrace('The captial of Frnace is');
    const view = traceFrame(page);
    const banner = view.locator('fl-trace-view .quality');
    await banner.waitFor({ timeout: 30_000 });
    assert.equal(await banner.getAttribute('data-verdict'), 'meaningless');
    const reasons = await banner.locator('li').allTextContents();
    assert.ok(reasons.some((r) => /is not above the corrupted/.test(r)), `the banner says why: ${reasons.join(' | ')}`);
    await screenshot(page, 'e2e-trace-weak.png');
    await page.locator('.tabs-container .tab', { hasText: 'capitals.prompts' }).first().click().catch(() => {});
  });

  test('trace a selection from the command palette (subject QuickPick, guess pre-selected)', { timeout: 400_000 }, async () => {
    await openFile(page, 'notes.md');
    const line = editorLine(page, 'The capital of Italy is');
    await line.waitFor();
    await line.click();
    await page.keyboard.press('Home');
    await page.keyboard.press('Shift+End');
    await runCommand(page, 'Fact Lens: Trace this prompt');
    await page.locator('.quick-input-widget', { hasText: 'which span' }).waitFor({ timeout: 15_000 });
    const active = page.locator('.quick-input-list .monaco-list-row.focused');
    await active.waitFor({ timeout: 15_000 });
    assert.match((await active.textContent()) ?? '', /Italy/, 'the guess "Italy" is pre-selected');
    await screenshot(page, 'e2e-2a-subject-quickpick.png');
    await page.keyboard.press('Enter');
    await waitForTrace('The capital of Italy is', ' Rome');
    await screenshot(page, 'e2e-2b-trace-selection-rome.png');
  });

  test('a prompt whose subject is missing shows an error message, not a hang', { timeout: 120_000 }, async () => {
    await openFile(page, 'mistakes.prompts');
    // Problems: each malformed line is reported (squiggles in the editor).
    await page.locator('.editor-instance .squiggly-error').first().waitFor({ timeout: 30_000 });
    await goToLine(page, 2); // "The capital of France is": no [subject]
    await runCommand(page, 'Fact Lens: Trace this prompt');
    const toast = page.locator('.notification-toast', { hasText: 'no [subject] marked' });
    await toast.waitFor({ timeout: 30_000 });
    const messages = await notifications(page);
    assert.ok(messages.some((m) => /line 2, column 1/.test(m)), `the error names line and column: ${messages.join(' | ')}`);
    await screenshot(page, 'e2e-3-missing-subject-error.png');
  });
  test('CounterFact records are traceable from their CodeLens', { timeout: 400_000 }, async () => {
    await openFile(page, 'counterfact.json');
    const lens = page.locator('.codelens-decoration a', { hasText: 'Trace "David Stan"' }).first();
    await lens.waitFor({ timeout: 60_000 });
    await lens.click();
    await waitForTrace('David Stan was born in');
    const expected = await traceFrame(page).locator('fl-trace-view [data-field="expect"]').textContent();
    assert.equal(expected?.trim(), 'Salvador', 'target_true is the expected answer');
    await screenshot(page, 'e2e-4-counterfact-codelens.png');
  });

  test('the status bar offers model selection and engine restart', { timeout: 200_000 }, async () => {
    const item = page.locator('.statusbar-item', { hasText: 'tinyworld' }).first();
    await item.click();
    const menu = page.locator('.quick-input-widget', { hasText: 'Fact Lens engine' });
    await menu.waitFor({ timeout: 15_000 });
    assert.ok(await menu.locator('.monaco-list-row', { hasText: 'Select model' }).count());
    await screenshot(page, 'e2e-5a-status-bar-menu.png');
    await menu.locator('.monaco-list-row', { hasText: 'Restart engine' }).click();
    await page.locator('.notification-toast', { hasText: 'engine restarted' }).waitFor({ timeout: 120_000 });
    assert.match((await item.textContent()) ?? '', /tinyworld · (wasm|cpu|node|node-gpu|native)/);
    await screenshot(page, 'e2e-5b-engine-restarted.png');
  });
});
