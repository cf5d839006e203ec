/**
 * Builds and runs bench/fma-peak.c (the machine's float32 FMA ceiling) with the system C
 * compiler. x86-64 with AVX2 and FMA only; elsewhere, or without a compiler, it says why not.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { cpuFlags } from './util.js';

export type FmaPeak = { ok: true; threads: number[]; gflops: number[] } | { ok: false; why: string };

export function fmaPeak(maxThreads: number): FmaPeak {
  if (process.arch !== 'x64') return { ok: false, why: `not x86-64 (${process.arch})` };
  const flags = cpuFlags();
  if (!flags.includes('avx2') || !flags.includes('fma')) return { ok: false, why: 'the CPU reports no AVX2 + FMA (or there is no /proc/cpuinfo)' };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-fma-'));
  try {
    const exe = path.join(dir, 'fma-peak');
    const cc = spawnSync('cc', ['-O2', '-mavx2', '-mfma', '-pthread', path.join(__dirname, 'fma-peak.c'), '-o', exe], { encoding: 'utf8' });
    if (cc.error || cc.status !== 0) return { ok: false, why: `cc could not build bench/fma-peak.c: ${cc.error?.message ?? cc.stderr.trim().split('\n').slice(-2).join(' | ')}` };
    const r = spawnSync(exe, [String(maxThreads)], { encoding: 'utf8', timeout: 120_000 });
    if (r.error || r.status !== 0) return { ok: false, why: `fma-peak failed: ${r.error?.message ?? r.stderr.trim()}` };
    const parsed = JSON.parse(r.stdout) as { threads: number[]; gflops: number[] };
    return { ok: true, ...parsed };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
