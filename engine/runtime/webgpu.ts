/**
 * The 'webgpu' backend: @tensorflow/tfjs-backend-webgpu (pure JS, WGSL kernels, keeps tfjs's
 * autograd) on Dawn's Node bindings (the `webgpu` package: prebuilt dawn.node for linux x64/arm64,
 * mac, win; Vulkan, Metal or D3D12 underneath). It runs on today's GPU drivers with no CUDA
 * toolkit, unlike tfjs-node-gpu (CUDA 11.2 + cuDNN 8). It is selected only when Dawn finds an
 * adapter. In Node the WebGPU backend can only read results asynchronously (its dataSync needs a
 * browser's OffscreenCanvas), so the engine's hot paths read with data() (runtime/vocab.ts
 * vocabQueryAsync, the trace).
 */
import * as fs from 'node:fs';
import { importEsm } from '../util/esm-import.js';

export interface AdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
}

interface DawnModule {
  create(flags: string[]): { requestAdapter(o?: { powerPreference?: string }): Promise<unknown> };
  globals: Record<string, unknown>;
}

let found: { info: AdapterInfo } | { reason: string } | null = null;

/**
 * Dawn's Vulkan backend on Linux needs the Vulkan loader; without it Dawn prints a warning and
 * finds nothing. Checking first keeps that warning out of every CLI run on a machine without it.
 */
function vulkanLoaderMissing(): boolean {
  if (process.platform !== 'linux') return false;
  const dirs = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib', ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean)];
  return !dirs.some((d) => fs.existsSync(`${d}/libvulkan.so.1`));
}

/**
 * Finds a WebGPU adapter through Dawn (once), installing `navigator.gpu` and the WebGPU globals
 * that tfjs-backend-webgpu expects. Returns the adapter's description or why there is none.
 */
export async function webgpuAdapter(): Promise<{ info: AdapterInfo } | { reason: string }> {
  if (found) return found;
  if (vulkanLoaderMissing()) return (found = { reason: 'no Vulkan loader (libvulkan.so.1) for Dawn: no GPU adapter' });
  let dawn: DawnModule;
  try {
    dawn = await importEsm<DawnModule>('webgpu');
  } catch (e) {
    return (found = { reason: `the webgpu package (Dawn) did not load: ${(e as Error).message.split('\n')[0]}` });
  }
  const gpu = dawn.create([]);
  const adapter = (await gpu.requestAdapter({ powerPreference: 'high-performance' })) as { info?: Partial<AdapterInfo> } | null;
  if (!adapter) return (found = { reason: 'Dawn found no WebGPU adapter (no GPU, or its Vulkan/Metal/D3D12 driver is missing)' });
  Object.assign(globalThis, dawn.globals);
  Object.defineProperty(globalThis, 'navigator', { value: { ...(globalThis.navigator ?? {}), gpu }, configurable: true, writable: true });
  const i = adapter.info ?? {};
  return (found = { info: { vendor: i.vendor ?? '', architecture: i.architecture ?? '', device: i.device ?? '', description: i.description ?? '' } });
}

/**
 * What is known without starting Dawn (probeBackends is synchronous): the adapter search's result
 * once it ran, unavailable without a Vulkan loader on Linux, otherwise "checked when selected".
 */
export function webgpuProbe(): { available: boolean; reason: string } {
  if (found) return 'reason' in found ? { available: false, reason: found.reason } : { available: true, reason: describe(found.info) };
  if (vulkanLoaderMissing()) return { available: false, reason: 'no Vulkan loader (libvulkan.so.1) for Dawn: no GPU adapter' };
  return { available: true, reason: 'Dawn installed; the GPU adapter is looked for when the backend is selected' };
}

export function describe(i: AdapterInfo): string {
  return `WebGPU adapter: ${[i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' · ') || 'unnamed'}`;
}

/** Registers tfjs's 'webgpu' backend (after webgpuAdapter found one: it checks navigator.gpu on import). */
export async function registerWebgpuBackend(): Promise<void> {
  await importEsm('@tensorflow/tfjs-backend-webgpu');
}
