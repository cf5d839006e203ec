/** The registry of architecture adapters, keyed by config.json `model_type`. */
import { FactLensError } from '../../errors.js';
import type { ArchitectureAdapter } from './types.js';
import { gpt2Adapter } from './gpt2.js';
import { gptjAdapter } from './gptj.js';
import { gptNeoxAdapter } from './gpt-neox.js';
import { llamaAdapter, qwen2Adapter } from './llama.js';

const ADAPTERS: ArchitectureAdapter[] = [gpt2Adapter, gptjAdapter, gptNeoxAdapter, llamaAdapter, qwen2Adapter];

export function supportedModelTypes(): string[] {
  return ADAPTERS.flatMap((a) => a.modelTypes);
}

export function adapterFor(config: Record<string, unknown>, configFile: string): ArchitectureAdapter {
  const type = config['model_type'];
  if (typeof type !== 'string') {
    throw new FactLensError('BAD_CONFIG', `${configFile}: no 'model_type' field`, { file: configFile, field: 'model_type' });
  }
  const adapter = ADAPTERS.find((a) => a.modelTypes.includes(type));
  if (!adapter) {
    throw new FactLensError(
      'UNSUPPORTED_MODEL_TYPE',
      `${configFile}: model_type '${type}' is not supported; supported: ${supportedModelTypes().join(', ')}`,
      { file: configFile, field: 'model_type', supported: supportedModelTypes() },
    );
  }
  return adapter;
}
