#!/usr/bin/env node
/**
 * npm run test:e2e: the webview component tests (headless Chromium, required here) and the
 * VS Code scenarios (code-server + Chromium), with node's test runner. Needs
 * `bash test/e2e/setup.sh` first. Screenshots: test-output/screenshots/.
 *
 * Offline: as root, where `unshare` and `ip` exist, everything runs in a fresh network
 * namespace with only the loopback interface, so the installed .vsix must trace with no
 * network at all. FACTLENS_E2E_OFFLINE=0 turns that off.
 *
 *   npm run test:e2e [-- test/e2e/scenarios.e2e.ts]   (default: every test/e2e/*.e2e.ts and the webview tests)
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// Default: every scenario file (one per feature, so features add scenarios without touching each
// other's files) and the webview component tests.
const scenarioFiles = () =>
  fs.readdirSync(path.join(ROOT, 'test', 'e2e')).filter((f) => f.endsWith('.e2e.ts')).sort().map((f) => `test/e2e/${f}`);
const files = process.argv.slice(2).length ? process.argv.slice(2) : [...scenarioFiles(), 'test/webview.test.ts'];
const started = Date.now();

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
let offline = process.env.FACTLENS_E2E_OFFLINE !== '0' && process.getuid?.() === 0 && has('unshare') && has('ip');
if (offline) {
  const probe = spawnSync('unshare', ['--net', 'sh', '-c', 'ip link set lo up'], { stdio: 'ignore' });
  offline = probe.status === 0;
}

const env = { ...process.env, FACTLENS_REQUIRE_CHROMIUM: '1' };
if (offline && files.some((f) => f.endsWith('.e2e.ts'))) {
  // Package before cutting the network (vsce needs none, but keep the offline run about VS Code).
  console.error('[e2e] npm run package');
  const p = spawnSync('npm', ['run', '--silent', 'package'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  if (p.status !== 0) process.exit(p.status ?? 1);
  env.FACTLENS_VSIX = path.join(ROOT, 'dist', 'fact-lens.vsix');
}
const node = [process.execPath, '--import', 'tsx', '--test', '--test-concurrency=1', ...files];
console.error(`[e2e] ${offline ? 'offline: a network namespace with loopback only' : 'with the machine\'s network (no network namespace)'}`);
const r = offline
  ? spawnSync('unshare', ['--net', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', ...node], { cwd: ROOT, stdio: 'inherit', env })
  : spawnSync(node[0], node.slice(1), { cwd: ROOT, stdio: 'inherit', env });
console.error(`[e2e] finished in ${Math.round((Date.now() - started) / 1000)} s; screenshots in test-output/screenshots/`);
process.exit(r.status ?? 1);
