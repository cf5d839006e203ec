import type { Checkpoint } from '../types.js';
import type { DecoderConfig, DecoderWeights } from '../decoder.js';

/**
 * An architecture adapter: reads a Hugging Face config + checkpoint into the canonical
 * decoder, and names the checkpoint tensor behind each editable matrix (to save edits).
 */
export interface ArchitectureAdapter {
  /** config.json model_type values this adapter handles. */
  modelTypes: string[];
  parseConfig(config: Record<string, unknown>, configFile: string): DecoderConfig;
  /** Total parameters the canonical model will hold (for memory checks before loading). */
  loadWeights(ckpt: Checkpoint, cfg: DecoderConfig): DecoderWeights;
  /**
   * Converts the canonical weights back to checkpoint tensors (name → [shape, data]) in the
   * architecture's own naming and orientation, for "save edited model".
   */
  exportTensors(weights: DecoderWeights, cfg: DecoderConfig): Array<{ name: string; shape: number[]; data: Float32Array }>;
}
