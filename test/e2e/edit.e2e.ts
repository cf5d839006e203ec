/**
 * Editing facts in a real VS Code (code-server + Chromium), with the packaged .vsix on the
 * embedded tinyworld model:
 *
 *   1. "Fact Lens: Edit fact…" from the palette on a prompt line (the wizard: template, new
 *      target, ROME defaults) → the diff view shows the new target as the top prediction;
 *   2. the Edits tree lists the edit under the model;
 *   3. after "Developer: Reload Window" the edit is still applied — re-applied from the journal,
 *      not recomputed (the extension's log says so) — and a trace shows the new target;
 *   4. Revert from the tree → the original prediction is back;
 *   5. an edit that does not take (the "Edit" CodeLens) shows the "did not take" verdict.
 *
 * CI budget: a first ROME edit on tinyworld computes the layer choice (causal tracing over 40
 * facts) and the layer's second-moment statistics; over the whole corpus (26,046 documents)
 * the statistics alone take about 3 minutes on 2 idle cores, far more on a loaded machine.
 * The workspace therefore sets `factlens.edit.statsSamples` to 1,000 documents (a user
 * setting; the default is the whole corpus), and the set-up runs the same edit once through
 * the real CLI (`factlens edit --stats-samples 1000`), which computes and caches the layer
 * choice and those statistics under the user cache dir (~/.cache/factlens). The edits in VS
 * Code then take their cached path (about 30 s each, mostly v*); on a warm cache the set-up
 * costs the one CLI edit.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Browser, Frame, Page } from 'playwright-core';
import {
  editorLine,
  goToLine,
  launchBrowser,
  log,
  openFile,
  openWorkbench,
  packageVsix,
  readEnv,
  runCommand,
  screenshot,
  startCodeServer,
  type CodeServer,
} from './harness.js';
import { ROOT } from '../helpers/browser.js';

const EDIT_TIMEOUT = 300_000;
/** Documents for the edit statistics, in the workspace settings and the pre-warming CLI edit. */
const STATS_SAMPLES = 1000;

/** The first frame (webviews are nested iframes) that holds `selector`. */
async function frameWith(page: Page, selector: string, timeoutMs = 60_000): Promise<Frame> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    for (const f of page.frames()) {
      if (await f.locator(selector).count().catch(() => 0)) return f;
    }
    if (Date.now() > end) throw new Error(`no webview shows ${selector}`);
    await page.waitForTimeout(250);
  }
}

/** Reads the edit view's edit-prompt section and verdict. */
async function editView(page: Page) {
  const f = await frameWith(page, 'fl-edit-view');
  return f.evaluate(() => {
    const root = document.querySelector('fl-edit-view')?.shadowRoot;
    const v = root?.querySelector('[data-field="verdict"]') as HTMLElement | null;
    const sec = root?.querySelector('section.prompt[data-kind="edit"]');
    return {
      took: v?.dataset.took ?? null,
      verdict: v?.textContent?.replace(/\s+/g, ' ').trim() ?? '',
      afterTop: sec?.querySelector('[data-field="after-top"]')?.textContent ?? null,
      target: root?.querySelector('[data-field="target-new"]')?.textContent?.trim() ?? null,
      status: root?.querySelector('[data-field="status"]')?.textContent?.trim() ?? null,
      charts: root?.querySelectorAll('.chart svg').length ?? 0,
    };
  });
}

async function waitForEditView(page: Page, target: string, timeoutMs = EDIT_TIMEOUT) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await editView(page).catch(() => null);
    if (v && v.target === target && v.took !== null && v.charts > 0) return v;
    if (Date.now() > end) throw new Error(`the edit view shows ${JSON.stringify(v)}, not the edit to ${target}`);
    await page.waitForTimeout(500);
  }
}

/**
 * The trace view's answer once a trace of `prompt` has finished. With `expected`, keeps polling
 * until the view shows it (or the deadline passes, returning what it shows): right after "Trace
 * this prompt" the view may still show the previous, finished trace of the same prompt before the
 * new run's progress appears, so the first finished answer read can be the stale one.
 */
async function traceAnswer(page: Page, prompt: string, expected?: string, timeoutMs = 240_000): Promise<string> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const f = await frameWith(page, 'fl-trace-view', timeoutMs).catch(() => null);
    const s = await f
      ?.evaluate(() => {
        const root = document.querySelector('fl-trace-view')?.shadowRoot;
        return {
          prompt: root?.querySelector('h1.prompt')?.textContent?.replace(/\s+/g, ' ').trim(),
          answer: root?.querySelector('[data-field="answer"]')?.textContent?.trim(),
          busy: !!root?.querySelector('.progress'),
        };
      })
      .catch(() => null);
    if (s && s.prompt === prompt && s.answer && !s.busy && (expected === undefined || s.answer === expected)) return s.answer;
    if (Date.now() > end) {
      if (expected !== undefined && s?.prompt === prompt && s.answer && !s.busy) return s.answer;
      throw new Error(`the trace view shows ${JSON.stringify(s)}`);
    }
    await page.waitForTimeout(500);
  }
}

/** Answers the three wizard steps: template as prefilled, the new target, the first method item. */
async function wizard(page: Page, expectTemplate: string, target: string, placeholderHas?: RegExp): Promise<void> {
  const input = page.locator('.quick-input-widget input.input');
  await page.locator('.quick-input-widget', { hasText: 'Edit fact (1/3)' }).waitFor({ timeout: 30_000 });
  assert.equal(await input.inputValue(), expectTemplate, 'the template is prefilled from the line');
  await page.keyboard.press('Enter');
  await page.locator('.quick-input-widget', { hasText: 'Edit fact (2/3)' }).waitFor({ timeout: 60_000 });
  if (placeholderHas) {
    const ph = await input.getAttribute('placeholder');
    assert.match(ph ?? '', placeholderHas, 'the current top prediction is the placeholder');
  }
  await input.fill(target);
  await page.keyboard.press('Enter');
  await page.locator('.quick-input-widget', { hasText: 'Edit fact (3/3)' }).waitFor({ timeout: 30_000 });
  const first = page.locator('.quick-input-list .monaco-list-row').first();
  assert.match((await first.textContent()) ?? '', /Edit with ROME \(defaults\)/);
  await page.keyboard.press('Enter');
}

/** The extension's log file (its LogOutputChannel) in the code-server profile. */
function extensionLog(server: CodeServer): string {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/Fact Lens\.log$/.test(e.name)) files.push(p);
    }
  };
  const logs = path.join(server.userData, 'logs');
  if (fs.existsSync(logs)) walk(logs);
  return files.map((f) => fs.readFileSync(f, 'utf8')).join('\n');
}

async function showEditsView(page: Page): Promise<void> {
  await runCommand(page, 'Fact Lens: Focus on Edits View');
  // The container's only view: VS Code hides its pane header; the model node heads the tree.
  await treeRow(page, 'tinyworld').waitFor({ timeout: 60_000 });
}

/** Back to the Explorer (openFile clicks its rows). */
async function showExplorer(page: Page): Promise<void> {
  await runCommand(page, 'View: Show Explorer');
  await page.locator('.explorer-folders-view .monaco-list-row').first().waitFor({ timeout: 60_000 });
}

function treeRow(page: Page, text: string) {
  return page.locator('.sidebar .pane-body .monaco-list-row', { hasText: text }).first();
}

describe('Editing facts in VS Code (code-server + Chromium)', { timeout: 1_800_000 }, () => {
  let server: CodeServer;
  let browser: Browser;
  let page: Page;

  before(async () => {
    const env = readEnv();
    const vsix = packageVsix();
    // Pre-warm the layer choice and statistics through the real CLI (cached afterwards).
    log(`pre-warming the layer choice and ROME statistics (${STATS_SAMPLES} documents): factlens edit`);
    const warm = spawnSync(
      process.execPath,
      [path.join(ROOT, 'bin', 'factlens.js'), 'edit', '--prompt', 'The capital of {} is', '--subject', 'France', '--target', 'Rome', '--tokens', '0', '--stats-samples', String(STATS_SAMPLES), '--json'],
      { cwd: ROOT, encoding: 'utf8', timeout: 900_000 },
    );
    if (warm.status !== 0) throw new Error(`factlens edit failed:\n${warm.stderr}`);
    const warmed = JSON.parse(warm.stdout) as { layer: number; timings: { statsCached: boolean; total: number } };
    log(`pre-warmed: layer ${warmed.layer}, statistics ${warmed.timings.statsCached ? 'were cached' : 'computed'}, ${warmed.timings.total.toFixed(0)} s`);
    server = await startCodeServer(env, vsix);
    const settingsFile = path.join(server.workspace, '.vscode', 'settings.json');
    const settings = fs.existsSync(settingsFile) ? (JSON.parse(fs.readFileSync(settingsFile, 'utf8')) as Record<string, unknown>) : {};
    fs.mkdirSync(path.dirname(settingsFile), { recursive: true });
    fs.writeFileSync(settingsFile, JSON.stringify({ ...settings, 'factlens.edit.statsSamples': STATS_SAMPLES }, null, 2));
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

  test('Edit fact… from the palette on a prompt line → the diff view shows " Rome" on top', { timeout: EDIT_TIMEOUT + 120_000 }, async () => {
    await openFile(page, 'capitals.prompts');
    await editorLine(page, 'The capital of [France] is').waitFor();
    // The "Edit" CodeLens sits beside "Trace".
    await page.locator('.codelens-decoration a', { hasText: 'Edit' }).first().waitFor({ timeout: 60_000 });
    await goToLine(page, 5);
    await runCommand(page, 'Fact Lens: Edit fact…');
    await wizard(page, 'The capital of {} is', 'Rome', /Paris/);
    const v = await waitForEditView(page, 'Rome');
    assert.equal(v.took, 'yes', v.verdict);
    assert.equal(v.afterTop, '" Rome"');
    assert.match(v.verdict, /The edit took: " Rome" is the top prediction/);
    await screenshot(page, 'e2e-edit-palette.png');
  });

  test('the Edits tree lists the edit under the model', { timeout: 120_000 }, async () => {
    await showEditsView(page);
    const row = treeRow(page, 'France: Paris → Rome');
    await row.waitFor({ timeout: 30_000 });
    assert.match((await row.textContent()) ?? '', /ROME, layer \d/);
    const model = treeRow(page, 'tinyworld');
    assert.match((await model.textContent()) ?? '', /(wasm|cpu|node|node-gpu|native) · [\d.]+M parameters/);
    await row.hover();
    await screenshot(page, 'e2e-edit-tree.png');
  });

  test('after Developer: Reload Window the edit is still applied, re-applied from the journal, not recomputed', { timeout: 400_000 }, async () => {
    const computedBefore = (extensionLog(server).match(/edit \S+ done in/g) ?? []).length;
    assert.equal(computedBefore, 1, 'one edit computed so far');
    await runCommand(page, 'Developer: Reload Window');
    await page.waitForTimeout(3000);
    await page.waitForSelector('.monaco-workbench', { timeout: 180_000 });
    await page.waitForSelector('.explorer-folders-view .monaco-list-row, .pane-body .monaco-list-row', { timeout: 180_000 });
    await showEditsView(page);
    await treeRow(page, 'France: Paris → Rome').waitFor({ timeout: 180_000 });
    // The diff view, measured again on the engine: " Rome" on top.
    await treeRow(page, 'France: Paris → Rome').click();
    const end = Date.now() + 120_000;
    while (!/probed edit \S+ after the restart: top " Rome"/.test(extensionLog(server))) {
      if (Date.now() > end) throw new Error('the diff was not measured again after the reload');
      await page.waitForTimeout(500);
    }
    const v = await waitForEditView(page, 'Rome', 60_000);
    assert.equal(v.afterTop, '" Rome"');
    // A trace of the prompt (edits.prompts has it without an expected answer): the edited model answers " Rome".
    await showExplorer(page);
    await openFile(page, 'edits.prompts');
    await goToLine(page, 4);
    await runCommand(page, 'Fact Lens: Trace this prompt');
    assert.equal(await traceAnswer(page, 'The capital of France is', '" Rome"'), '" Rome"');
    const logText = extensionLog(server);
    assert.match(logText, /re-applied 1 edit\(s\) from .*edits[\\/][0-9a-f]{64}\.json/, 're-applied from the journal file');
    assert.equal((logText.match(/edit \S+ done in/g) ?? []).length, 1, 'no edit was computed again');
    await screenshot(page, 'e2e-edit-reload.png');
  });

  test('Revert from the tree → the original prediction " Paris" is back', { timeout: 400_000 }, async () => {
    await showEditsView(page);
    const row = treeRow(page, 'France: Paris → Rome');
    await row.hover();
    await row.locator('.action-label[aria-label*="Revert"]').click();
    await page.locator('.notification-toast', { hasText: 'reverted France → Rome' }).waitFor({ timeout: 60_000 });
    await treeRow(page, 'No edits yet').waitFor({ timeout: 30_000 });
    await showExplorer(page);
    await openFile(page, 'edits.prompts');
    await goToLine(page, 4);
    await runCommand(page, 'Fact Lens: Trace this prompt');
    assert.equal(await traceAnswer(page, 'The capital of France is', '" Paris"'), '" Paris"');
    await showEditsView(page);
    await screenshot(page, 'e2e-edit-revert.png');
  });

  test('an edit that does not take (from its "Edit" CodeLens) shows the "did not take" verdict', { timeout: EDIT_TIMEOUT + 120_000 }, async () => {
    await showExplorer(page);
    await openFile(page, 'edits.prompts');
    await editorLine(page, '[Winnipeg] is located in the country of').waitFor();
    // The CodeLens of that line (the third prompt of the file). v* never makes "Thailand"
    // likely for this subject, even retried with twice the steps, so the verdict names v* and
    // suggests a larger clamp or more steps.
    const lenses = page.locator('.codelens-decoration a', { hasText: 'Edit' });
    await lenses.nth(2).waitFor({ timeout: 60_000 });
    await lenses.nth(2).click();
    await wizard(page, '{} is located in the country of', 'Thailand', /Canada/);
    const v = await waitForEditView(page, 'Thailand');
    assert.equal(v.took, 'no', v.verdict);
    assert.notEqual(v.afterTop, '" Thailand"');
    assert.match(v.verdict, /The edit did not take/);
    assert.match(v.verdict, /v\*/);
    await screenshot(page, 'e2e-edit-failed.png');
  });
});
