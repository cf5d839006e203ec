/**
 * `factlens --version` (also `factlens version`): the package version, and which compute
 * backends can run here (with the reason when one cannot) and which one is used by default.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { probeBackends, selectBackend, type BackendStatus } from '../../runtime/backend.js';
import { defaultModelDir } from '../../model/load.js';
import type { OptionsSpec, ParsedArgs } from '../args.js';
import { quietNativeProbe } from '../common.js';
import type { CommandIO } from '../types.js';
import pkg from '../../../package.json';

export const name = 'version';
export const summary = 'show the version, the compute backends and the default one';
export const usage = 'version [--json]   (or: factlens --version)';
export const description =
  'Backends are tried in this order: node-gpu (@tensorflow/tfjs-node-gpu, CUDA), node\n' +
  '(@tensorflow/tfjs-node), native (WASM with onnxruntime-node CPU products), wasm (bundled,\n' +
  'SIMD), cpu (plain JS). The native ones are used only when they load.';

export const options: OptionsSpec = {
  json: { type: 'boolean', description: 'print the report as JSON on stdout' },
};

export const VERSION: string = pkg.version;

export interface VersionReport {
  name: string;
  version: string;
  node: string;
  platform: string;
  backends: BackendStatus[];
  /** The backend chosen when none is forced, or null if none starts. */
  defaultBackend: string | null;
  /** Why no backend starts (only when defaultBackend is null). */
  error?: string;
  embeddedModel: string | null;
}

const NATIVE: Record<string, string> = {
  'node-gpu': '@tensorflow/tfjs-node-gpu',
  node: '@tensorflow/tfjs-node',
};

/**
 * probeBackends() only checks that a native package is installed; here it is actually loaded,
 * so a package whose native library is missing (install script skipped or failed) is reported
 * with the load error.
 */
function loadNatives(statuses: BackendStatus[]): BackendStatus[] {
  let loaded: string | null = null;
  return statuses.map((status) => {
    const pkgName = NATIVE[status.name];
    if (!pkgName || !status.available) return status;
    // Both native packages register the same 'tensorflow' backend: load only the first that works.
    if (loaded) return { ...status, reason: `installed; not loaded, ${loaded} comes first` };
    try {
      createRequire(__filename)(pkgName);
      loaded = status.name;
      return { name: status.name, available: true };
    } catch (e) {
      return { name: status.name, available: false, reason: `${pkgName} did not load: ${(e as Error).message.split('\n')[0]}` };
    }
  });
}

export async function versionReport(env: NodeJS.ProcessEnv = process.env): Promise<VersionReport> {
  let defaultBackend: string | null = null;
  let error: string | undefined;
  const backends = await quietNativeProbe(async () => {
    const statuses = loadNatives(probeBackends());
    try {
      defaultBackend = await selectBackend();
    } catch (e) {
      error = (e as Error).message;
    }
    return statuses;
  }, env);
  const model = defaultModelDir();
  return {
    name: 'factlens',
    version: VERSION,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    backends,
    defaultBackend,
    ...(error ? { error } : {}),
    embeddedModel: fs.existsSync(path.join(model, 'config.json')) ? model : null,
  };
}

export function formatVersion(r: VersionReport): string {
  const lines = [`factlens ${r.version} (node ${r.node}, ${r.platform})`, 'backends, in order of preference:'];
  const w = Math.max(...r.backends.map((b) => b.name.length));
  for (const b of r.backends) {
    const mark = b.name === r.defaultBackend ? 'default' : b.available ? 'available' : 'unavailable';
    lines.push(`  ${b.name.padEnd(w)}  ${mark.padEnd(11)}${b.reason ? `  ${b.reason}` : ''}`.trimEnd());
  }
  lines.push(r.defaultBackend ? `default backend: ${r.defaultBackend}` : `default backend: none can start: ${r.error}`);
  lines.push(`embedded model: ${r.embeddedModel ?? 'not found'}`);
  return lines.join('\n') + '\n';
}

export async function run(args: ParsedArgs, io: CommandIO): Promise<number> {
  const report = await versionReport(io.env);
  io.stdout.write(args.values.json ? JSON.stringify(report, null, 2) + '\n' : formatVersion(report));
  return report.defaultBackend ? 0 : 1;
}
