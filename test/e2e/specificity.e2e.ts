/**
 * Specificity beside the code in a real VS Code (code-server + Chromium), with the packaged
 * .vsix on the embedded tinyworld model and the workspace's samples/namesakes.prompts:
 *
 *   1. an edit ("Fact Lens: Edit fact…" on "[Akiko Costa] is a citizen of", new target Japan)
 *      → every prompt line shows its answer before → after at its end, the status bar shows
 *      `specificity N/M unchanged`;
 *      (hovering a prompt: the top-5 before and after, the applied edit);
 *   2. the namesakes whose citizenship the edit changed are Warnings in Problems, with the
 *      quick fixes "Revert edit …" and "Show edit diff …";
 *   3. "Revert edit …" → the decorations, the warnings and the status-bar item are gone.
 *
 * A first ROME edit on tinyworld computes the layer choice and the layer's statistics (minutes
 * on 2 cores, then cached under ~/.cache/factlens); the set-up runs that once through the real
 * CLI, so the edit in VS Code takes its cached path.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { editorLine, goToLine, launchBrowser, log, openFile, openWorkbench, packageVsix, readEnv, runCommand, screenshot, startCodeServer, type CodeServer } from './harness.js';
import { ROOT } from '../helpers/browser.js';

const EDIT_TIMEOUT = 600_000;
const FILE = 'namesakes.prompts';
/** Documents for the edit statistics, in the workspace settings and the pre-warming CLI edit (as the edit e2e). */
const STATS_SAMPLES = 1000;

/** The text an editor line shows after its content: the ::after pseudo-elements of its spans. */
async function afterText(page: Page, lineText: string): Promise<string> {
  return editorLine(page, lineText).evaluate((line) =>
    [...line.querySelectorAll('span')]
      .map((s) => getComputedStyle(s, '::after').content)
      .filter((c) => c && c !== 'none' && c !== 'normal' && c !== '""')
      .map((c) => c.replace(/^"|"$/g, ''))
      .join(' '),
  );
}

async function waitFor(what: string, fn: () => Promise<boolean>, timeoutMs: number, page: Page): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await fn().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(500);
  }
}

describe('Specificity beside the code (code-server + Chromium)', { timeout: 2_400_000 }, () => {
  let server: CodeServer;
  let browser: Browser;
  let page: Page;
  const status = () => page.locator('.statusbar-item', { hasText: /specificity \d+\/\d+ unchanged/ });

  before(async () => {
    const env = readEnv();
    const vsix = packageVsix();
    log('pre-warming the ROME layer choice and statistics: factlens edit (seconds when cached)');
    const warm = spawnSync(
      process.execPath,
      [path.join(ROOT, 'bin', 'factlens.js'), 'edit', '--prompt', '{} is a citizen of', '--subject', 'Akiko Costa', '--target', 'Japan', '--tokens', '0', '--stats-samples', String(STATS_SAMPLES), '--json'],
      { cwd: ROOT, encoding: 'utf8', timeout: 900_000 },
    );
    if (warm.status !== 0) throw new Error(`factlens edit failed:\n${warm.stderr}`);
    server = await startCodeServer(env, vsix);
    const settingsFile = path.join(server.workspace, '.vscode', 'settings.json');
    const settings = fs.existsSync(settingsFile) ? (JSON.parse(fs.readFileSync(settingsFile, 'utf8')) as Record<string, unknown>) : {};
    fs.mkdirSync(path.dirname(settingsFile), { recursive: true });
    fs.writeFileSync(settingsFile, JSON.stringify({ ...settings, 'factlens.edit.statsSamples': STATS_SAMPLES }, null, 2));
    browser = await launchBrowser(env);
    page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    // The machine may be shared and slow: generous waits (every wait below still fails on a hang).
    page.setDefaultTimeout(180_000);
    page.on('pageerror', (e) => log(`page error: ${e.message}`));
    await openWorkbench(page, server.url);
    log('workbench ready');
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test('after an edit every prompt line shows before → after; the status bar counts the unchanged', { timeout: EDIT_TIMEOUT + 120_000 }, async () => {
    await openFile(page, FILE);
    await editorLine(page, '[Jiwoo Costa] is a citizen of').waitFor();
    assert.equal(await afterText(page, '[Jiwoo Costa] is a citizen of'), '', 'no decorations before any edit');
    // The engine has started and loaded the model (the wizard asks it for the current answer).
    await page.locator('.statusbar-item', { hasText: /tinyworld · / }).first().waitFor({ timeout: 480_000 });
    await goToLine(page, 5);
    await runCommand(page, 'Fact Lens: Edit fact…');
    const input = page.locator('.quick-input-widget input.input');
    await page.locator('.quick-input-widget', { hasText: 'Edit fact (1/3)' }).waitFor({ timeout: 120_000 });
    assert.equal(await input.inputValue(), '{} is a citizen of');
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-widget', { hasText: 'Edit fact (2/3)' }).waitFor({ timeout: 120_000 });
    await input.fill('Japan');
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-widget', { hasText: 'Edit fact (3/3)' }).waitFor({ timeout: 30_000 });
    await page.keyboard.press('Enter');
    // The edit view opens beside; one editor group gives the prompt file the width for its decorations.
    await waitFor('the specificity status', async () => (await status().count()) > 0, EDIT_TIMEOUT, page);
    await runCommand(page, 'View: Single Column Editor Layout');
    await page.locator('.tabs-container .tab', { hasText: FILE }).first().click();
    const edited = await afterText(page, '[Akiko Costa] is a citizen of');
    assert.match(edited, /^China 100\.0% → Japan \d+\.\d%$/, 'the edited fact moved to Japan');
    const paris = await afterText(page, 'The capital of [France] is');
    assert.match(paris, /^Paris 99\.\d% → Paris 99\.\d%$/, 'an unrelated fact keeps its answer');
    const all = await Promise.all(['[Jiwoo Costa]', '[Miguel Costa]', '[Lan Costa]', '[Ines Costa]'].map((t) => afterText(page, t)));
    for (const a of all) assert.match(a, /^\S+ \d+\.\d% → \S+ \d+\.\d%$/, a);
    const statusText = (await status().first().textContent()) ?? '';
    const [, n, m] = /specificity (\d+)\/(\d+) unchanged/.exec(statusText)!;
    // Six prompts besides the edited fact; the namesakes whose answer changed are not counted.
    const changed = all.filter((a) => a.split(' → ')[0].split(' ')[0] !== a.split(' → ')[1].split(' ')[0]).length;
    assert.equal(Number(m), 6, statusText);
    assert.ok(Number(n) <= 6 - changed, `${statusText}: ${changed} namesakes changed`);
    await screenshot(page, 'e2e-specificity-inline.png');
    // Hovering a prompt shows the top-5 before and after and the applied edits.
    await editorLine(page, '[Jiwoo Costa] is a citizen of').locator('span', { hasText: 'is a citizen of' }).first().hover();
    const hover = page.locator('.monaco-hover', { hasText: 'Fact Lens specificity' });
    await hover.first().waitFor({ timeout: 30_000 });
    const hoverText = (await hover.first().textContent()) ?? '';
    assert.match(hoverText, /changed by an edit about another subject/);
    assert.match(hoverText, /Akiko Costa → Japan \(ROME, was China\)/);
    await screenshot(page, 'e2e-specificity-hover.png');
    await page.keyboard.press('Escape');
  });

  test('collateral damage is a Warning in Problems, with Revert and Show diff quick fixes', { timeout: 180_000 }, async () => {
    await runCommand(page, 'View: Focus Problems');
    const rows = page.locator('.markers-panel .monaco-list-row');
    await rows.first().waitFor({ timeout: 30_000 });
    const warning = page.locator('.markers-panel .monaco-list-row', { hasText: "edit 'Akiko Costa → Japan' changed this answer" });
    await warning.first().waitFor({ timeout: 30_000 });
    const texts = await rows.allTextContents();
    assert.ok(texts.some((t) => /changed this answer: " (Kenya|China|Vietnam|Korea)" → " Japan"/.test(t)), texts.join('\n'));
    await screenshot(page, 'e2e-specificity-problems.png');

    // The quick fixes of the warned line (clicking the entry puts the cursor on it).
    await warning.first().click();
    await page.keyboard.press('Control+.');
    const menu = page.locator('.action-widget, .monaco-menu, .context-view');
    await menu.locator('text=/Revert edit .Akiko Costa → Japan./').first().waitFor({ timeout: 30_000 });
    assert.ok(await menu.locator('text=/Show edit diff .Akiko Costa → Japan./').count(), 'Show edit diff is offered');
    await screenshot(page, 'e2e-specificity-quickfix.png');
  });

  test('Revert that edit → decorations, warnings and the status bar item are gone', { timeout: 240_000 }, async () => {
    const menu = page.locator('.action-widget, .monaco-menu, .context-view');
    await menu.locator('text=/Revert edit .Akiko Costa → Japan./').first().click();
    await waitFor('the status item to go', async () => (await status().count()) === 0, 120_000, page);
    await page.locator('.tabs-container .tab', { hasText: FILE }).first().click();
    await waitFor('the decorations to go', async () => (await afterText(page, '[Jiwoo Costa] is a citizen of')) === '', 60_000, page);
    assert.equal(await afterText(page, '[Akiko Costa] is a citizen of'), '');
    await runCommand(page, 'View: Focus Problems');
    await waitFor(
      'the warnings to go',
      async () => (await page.locator('.markers-panel .monaco-list-row', { hasText: 'changed this answer' }).count()) === 0,
      60_000,
      page,
    );
    await screenshot(page, 'e2e-specificity-reverted.png');
  });
});
