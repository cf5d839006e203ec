/** Running the built `factlens` command (bin/factlens.js → dist/engine/cli.js) as a user would. */
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

export const ROOT = path.resolve(__dirname, '..', '..');
export const BIN = path.join(ROOT, 'bin', 'factlens.js');
/** Honour the suite's backend choice (see test/helpers/model.ts). */
export const BACKEND_ARGS = process.env.FACTLENS_TEST_BACKEND ? ['--backend', process.env.FACTLENS_TEST_BACKEND] : [];

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Builds the engine CLI bundle (call once, in before()). */
export async function buildCli(): Promise<void> {
  await promisify(execFile)(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs'), '--only', 'engine cli'], { cwd: ROOT });
  if (!fs.existsSync(path.join(ROOT, 'dist', 'engine', 'cli.js'))) throw new Error('the build did not write dist/engine/cli.js');
}

export function factlens(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 300_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const e = { ...process.env, ...env };
    delete e.FACTLENS_DEBUG;
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: e, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}
