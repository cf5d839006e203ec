/**
 * End-to-end harness: the packaged extension (.vsix) installed into code-server (a real VS Code
 * with a Node extension host), served to Debian's Chromium driven by playwright-core.
 * test/e2e/setup.sh prepares code-server, Node 24 and Chromium and writes env.json into its
 * cache; see ../shared/docs/vscode-e2e.md.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Browser, FrameLocator, Page } from 'playwright-core';
import { CHROMIUM_ARGS, ROOT } from '../helpers/browser.js';

export const CACHE = process.env.FACTLENS_E2E_CACHE ?? path.join(os.homedir(), '.cache', 'factlens-e2e');
/** Screenshots of every scenario (named in the README). */
export const SHOTS = path.join(ROOT, 'test-output', 'screenshots');
export const WORK = path.join(ROOT, 'test-output', 'e2e');

export interface E2eEnv {
  node: string;
  codeServer: string;
  chromium: string;
}

export function readEnv(): E2eEnv {
  const file = path.join(CACHE, 'env.json');
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: run bash test/e2e/setup.sh first`);
  const env = JSON.parse(fs.readFileSync(file, 'utf8')) as E2eEnv;
  for (const [k, v] of Object.entries(env)) if (!fs.existsSync(v)) throw new Error(`${k} (${v}) is missing: run bash test/e2e/setup.sh`);
  return env;
}

export function log(msg: string): void {
  process.stderr.write(`[e2e ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** The .vsix: FACTLENS_VSIX, or `npm run package` (production build + vsce). */
export function packageVsix(): string {
  if (process.env.FACTLENS_VSIX) return path.resolve(process.env.FACTLENS_VSIX);
  log('npm run package');
  const r = spawnSync('npm', ['run', '--silent', 'package'], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm run package failed:\n${r.stdout}\n${r.stderr}`);
  return path.join(ROOT, 'dist', 'fact-lens.vsix');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface CodeServer {
  url: string;
  workspace: string;
  userData: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** User settings for a quiet, deterministic workbench. */
const USER_SETTINGS = {
  'workbench.colorTheme': 'Default Dark Modern',
  'workbench.startupEditor': 'none',
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
  'workbench.auxiliaryBar.visible': false,
  'workbench.tips.enabled': false,
  'workbench.welcomePage.walkthroughs.openOnInstall': false,
  'workbench.enableExperiments': false,
  'security.workspace.trust.enabled': false,
  'telemetry.telemetryLevel': 'off',
  'update.mode': 'none',
  'extensions.autoCheckUpdates': false,
  'extensions.autoUpdate': false,
  'extensions.ignoreRecommendations': true,
  'chat.disableAIFeatures': true,
  'chat.commandCenter.enabled': false,
  'window.commandCenter': false,
  'editor.codeLens': true,
  'editor.minimap.enabled': false,
  'files.autoSave': 'off',
  'git.enabled': false,
};

/** Installs the .vsix into a fresh profile and starts code-server on a free port with a copy of samples/. */
export async function startCodeServer(env: E2eEnv, vsix: string): Promise<CodeServer> {
  fs.rmSync(WORK, { recursive: true, force: true });
  const userData = path.join(WORK, 'user-data');
  const extensions = path.join(WORK, 'extensions');
  const workspace = path.join(WORK, 'workspace');
  fs.mkdirSync(path.join(userData, 'User'), { recursive: true });
  fs.writeFileSync(path.join(userData, 'User', 'settings.json'), JSON.stringify(USER_SETTINGS, null, 2));
  fs.cpSync(path.join(ROOT, 'samples'), workspace, { recursive: true });

  const common = ['--user-data-dir', userData, '--extensions-dir', extensions, '--disable-telemetry', '--disable-update-check'];
  log(`code-server --install-extension ${path.relative(ROOT, vsix)}`);
  const inst = spawnSync(env.node, [env.codeServer, ...common, '--install-extension', vsix], { encoding: 'utf8', timeout: 120_000 });
  if (inst.status !== 0) throw new Error(`--install-extension failed:\n${inst.stdout}\n${inst.stderr}`);
  log(inst.stdout.trim().split('\n').pop() ?? '');

  const port = await freePort();
  const logFile = fs.openSync(path.join(WORK, 'code-server.log'), 'w');
  const child = spawn(
    env.node,
    [env.codeServer, '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, ...common, '--disable-workspace-trust', '--disable-getting-started-override', workspace],
    { stdio: ['ignore', logFile, logFile], env: { ...process.env, VSCODE_CLI: undefined, ELECTRON_RUN_AS_NODE: undefined } },
  );
  const url = `http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`code-server exited (${child.exitCode}); see ${path.join(WORK, 'code-server.log')}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error('code-server did not answer within 60 s');
    await new Promise((r) => setTimeout(r, 250));
  }
  log(`code-server up on port ${port}`);
  return {
    url,
    workspace,
    userData,
    process: child,
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          resolve();
        }, 5000);
        child.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
      });
    },
  };
}

export async function launchBrowser(env: E2eEnv): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: env.chromium, args: CHROMIUM_ARGS, headless: true });
}

// ---------------------------------------------------------------------------------------------
// Workbench helpers
// ---------------------------------------------------------------------------------------------

export async function openWorkbench(page: Page, url: string): Promise<void> {
  // Generous limits: on 2 busy cores the first load of the workbench can take a minute.
  page.setDefaultTimeout(60_000);
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 180_000 });
  await page.waitForSelector('.monaco-workbench', { timeout: 180_000 });
  // The explorer shows the workspace once the remote file system is up.
  await page.waitForSelector('.explorer-folders-view .monaco-list-row', { timeout: 180_000 });
}

/** Runs a command through the command palette. */
export async function runCommand(page: Page, title: string): Promise<void> {
  await page.keyboard.press('Control+Shift+P');
  const input = page.locator('.quick-input-widget input.input');
  await input.waitFor({ state: 'visible' });
  await input.fill(`>${title}`);
  const row = page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first();
  await row.waitFor({ state: 'visible', timeout: 15_000 });
  await page.keyboard.press('Enter');
}

/** Opens a workspace file from the Explorer and waits for its editor. */
export async function openFile(page: Page, name: string): Promise<void> {
  const row = page.locator('.explorer-folders-view .monaco-list-row', { hasText: new RegExp(`^\\s*${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`) }).first();
  await row.waitFor({ state: 'visible', timeout: 30_000 });
  await row.click();
  await page.locator('.tabs-container .tab.active', { hasText: name }).first().waitFor({ timeout: 30_000 });
  await page.locator('.editor-instance .monaco-editor .view-lines').first().waitFor();
}

/** Moves the cursor to a 1-based line with Go to Line. */
export async function goToLine(page: Page, line: number): Promise<void> {
  await page.keyboard.press('Control+G');
  const input = page.locator('.quick-input-widget input.input');
  await input.waitFor({ state: 'visible' });
  await input.fill(`:${line}`);
  await page.keyboard.press('Enter');
  await input.waitFor({ state: 'hidden' });
}

/** The editor line element whose text contains `text`. */
export function editorLine(page: Page, text: string) {
  return page.locator('.editor-instance .view-line', { hasText: text }).first();
}

/** The trace webview's document (nested iframes). */
export function traceFrame(page: Page): FrameLocator {
  return page.frameLocator('iframe.webview.ready').last().frameLocator('#active-frame');
}

export async function screenshot(page: Page, name: string): Promise<string> {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, name);
  await page.screenshot({ path: file });
  log(`screenshot ${path.relative(ROOT, file)}`);
  return file;
}

/** Visible notification toasts' messages. */
export async function notifications(page: Page): Promise<string[]> {
  return page.locator('.notification-toast .notification-list-item-message').allTextContents();
}
