/** Model loading and the loaded model's description: `model/load`, `model/info`. */
import { RequestType } from 'vscode-jsonrpc';
import type { EngineErrorData } from './errors.js';
import type { WithProgress } from './jobs.js';

/**
 * Compute backends, in the order the engine tries them ('webgpu': tfjs-backend-webgpu on Dawn, only
 * where an adapter exists; 'native': WASM with onnxruntime's CPU products, engine/runtime/native).
 */
export const BACKEND_NAMES = ['node-gpu', 'node', 'webgpu', 'native', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

export interface BackendStatus {
  name: BackendName;
  available: boolean;
  /** Why it is not available (package missing, native library failed to load, ...). */
  reason?: string;
}

/** What the engine says about the loaded model. */
export interface ModelInfo {
  name: string;
  /** Absolute folder on the engine's machine. */
  dir: string;
  backend: BackendName;
  modelType: string;
  nLayer: number;
  dModel: number;
  nHead: number;
  dMlp: number;
  vocabSize: number;
  /** Longest prompt in tokens. */
  nCtx: number;
  parameterCount: number;
  /**
   * SHA-256 over the checkpoint's weight files: the model's identity. Edit records carry the
   * hash they were computed on, and the extension keys its edit journals by it.
   */
  contentHash: string;
  /** Ids of the edits applied to this model, oldest first. */
  edits: string[];
  loadedAt: string;
}

export interface ModelLoadParams extends WithProgress {
  /** Model folder on the engine's machine (default: the embedded tinyworld model). */
  dir?: string;
  /** Compute backend (default: the engine's preferred one, else the first that starts). */
  backend?: BackendName;
}

/** model/load replaces the loaded model; edits applied to the previous one are gone. */
export const ModelLoad = new RequestType<ModelLoadParams, ModelInfo, EngineErrorData>('model/load');

export type ModelInfoParams = Record<string, never>;
/** The loaded model, or null when none is loaded. */
export const ModelInfoRequest = new RequestType<ModelInfoParams, ModelInfo | null, EngineErrorData>('model/info');
