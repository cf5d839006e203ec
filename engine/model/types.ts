/** Shapes shared by the checkpoint reader, the architecture adapters and the runtime. */

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';

/** One tensor's entry in a safetensors header, plus the file that holds it. */
export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute path of the .safetensors file holding this tensor. */
  file: string;
  /** Byte range of the data, absolute within the file (header already accounted for). */
  begin: number;
  end: number;
}

/** A host-side float32 tensor, row-major. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** A checkpoint folder opened for reading: the config and a lazy tensor reader. */
export interface Checkpoint {
  dir: string;
  /** Parsed config.json. */
  config: Record<string, unknown>;
  /** The safetensors files the checkpoint consists of (one, or the shards of an index). */
  files: string[];
  tensorNames(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /**
   * Reads one tensor from disk and upcasts it to float32. Reads only that tensor's bytes; into
   * `into` when given (its length must be the tensor's element count).
   */
  read(name: string, into?: Float32Array): HostTensor;
  /** Total number of parameters (elements) over all tensors. */
  parameterCount(): number;
}
