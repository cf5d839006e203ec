/**
 * ROME context templates (rome-spec §2.3): `["{}"]` plus, for each (length, n) in
 * [[5, 10], [10, 10]], n texts sampled from the unedited model after `<|endoftext|>` with
 * top-k 5 sampling until the sequence (prompt included) has `length` tokens. Each text is
 * NFKD-normalised, "\n\n" → " ", `<|endoftext|>` stripped, `{` and `}` replaced by spaces
 * (MEMIT's sanitising; a stray brace would break filling in), then `+ ". {}"`.
 *
 * The reference samples without a seed; here sampling is seeded (default 0), so a model always
 * gets the same 21 templates. They are cached per model content hash and seed, in memory and
 * on disk (`<cache root>/templates/<model hash>-s<seed>.json`).
 */
import * as path from 'node:path';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { generate } from '../runtime/generate.js';
import { cacheRoot, modelContentHash, readJsonCache, shortHash, writeJsonCache } from './hash.js';
import { baseModel } from './state.js';

export const TEMPLATE_LENGTHS: Array<[number, number]> = [
  [5, 10],
  [10, 10],
];

export interface TemplateOptions {
  seed?: number;
  /** [[total length, count], ...] (default [[5, 10], [10, 10]]). */
  lengths?: Array<[number, number]>;
  /**
   * Start words (MEMIT, rome-spec §5.2): each group's texts begin with these words in turn
   * instead of `<|endoftext|>`, and the group's length counts the start word's tokens.
   */
  starts?: string[];
  cache?: boolean;
}

export interface ContextTemplates {
  templates: string[];
  cached: boolean;
  seconds: number;
}

const memory = new Map<string, string[]>();
const EOT = '<|endoftext|>';

export function cleanTemplateText(text: string): string {
  return (
    text
      .normalize('NFKD')
      .replace(/\n\n/g, ' ')
      .split(EOT)
      .join('')
      .replace(/[{}]/g, ' ') + '. {}'
  );
}

export function contextTemplates(model: LoadedModel, opts: TemplateOptions = {}): ContextTemplates {
  const started = performance.now();
  const seed = opts.seed ?? 0;
  const lengths = opts.lengths ?? TEMPLATE_LENGTHS;
  const starts = opts.starts?.length ? opts.starts : null;
  const tag = lengths.map(([l, n]) => `${l}x${n}`).join('_') + (starts ? `-w${shortHash(starts.join('\u0000'))}` : '');
  const key = `${modelContentHash(model)}-s${seed}-${tag}`;
  const file = path.join(cacheRoot(), 'templates', `${shortHash(modelContentHash(model))}-s${seed}-${tag}.json`);
  const useCache = opts.cache !== false;
  if (useCache) {
    const hit = memory.get(key) ?? readJsonCache<{ templates: string[] }>(file)?.templates;
    if (hit && Array.isArray(hit) && hit.every((t) => typeof t === 'string' && t.split('{}').length === 2)) {
      memory.set(key, hit);
      return { templates: [...hit], cached: true, seconds: (performance.now() - started) / 1000 };
    }
  }
  const eos = model.tokenizer.eosId ?? model.config.eosId;
  if (eos === null && !starts) {
    throw new FactLensError('INVALID_ARGUMENT', `${model.name} has no end-of-text token to start context templates from`, {
      field: 'model',
    });
  }
  const base = baseModel(model);
  const templates = ['{}'];
  lengths.forEach(([len, n], gi) => {
    if (starts) {
      // One text per start word (cycled), each generated to `len` tokens in total.
      for (let i = 0; i < n; i++) {
        const start = model.tokenizer.encode(starts[i % starts.length]);
        if (start.length === 0) throw new FactLensError('INVALID_ARGUMENT', `template start word ${JSON.stringify(starts[i % starts.length])} has no tokens`, { field: 'starts' });
        const [ids] = generate(base, [start], {
          maxNewTokens: Math.max(1, len - start.length),
          strategy: 'top-k',
          topK: 5,
          seed: seed * 1000 + gi * 100 + i,
          useCache: true,
        });
        templates.push(cleanTemplateText(model.tokenizer.decode([...start, ...ids])));
      }
      return;
    }
    const prompts = Array.from({ length: n }, () => [eos!]);
    const out = generate(base, prompts, {
      maxNewTokens: len - 1,
      strategy: 'top-k',
      topK: 5,
      seed: seed * 1000 + gi,
      useCache: true,
    });
    for (const ids of out) templates.push(cleanTemplateText(model.tokenizer.decode([eos!, ...ids])));
  });
  memory.set(key, templates);
  if (useCache) {
    try {
      writeJsonCache(file, { model: modelContentHash(model), seed, lengths, starts, templates });
    } catch {
      /* unwritable cache: regenerate next process */
    }
  }
  return { templates: [...templates], cached: false, seconds: (performance.now() - started) / 1000 };
}
