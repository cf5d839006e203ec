/**
 * Activation-site names (TransformerLens scheme, see docs/architecture.md). Every reader and
 * writer of activations (tracing, ROME keys/values, v* deltas, MEMIT) goes through these
 * names and the one forward pass (decoder-forward.ts; its native block graphs call hooks at the
 * same sites with the same tensors).
 */
import type * as tf from '@tensorflow/tfjs-core';

export const SITE_EMBED = 'hook_embed';
export const SITE_FINAL_NORM = 'ln_final.hook_normalized';

export const site = {
  embed: SITE_EMBED,
  residPre: (l: number) => `blocks.${l}.hook_resid_pre`,
  attnOut: (l: number) => `blocks.${l}.hook_attn_out`,
  mlpOut: (l: number) => `blocks.${l}.hook_mlp_out`,
  mlpPost: (l: number) => `blocks.${l}.mlp.hook_post`,
  residPost: (l: number) => `blocks.${l}.hook_resid_post`,
  finalNorm: SITE_FINAL_NORM,
};

const SITE_RE = /^(hook_embed|ln_final\.hook_normalized|blocks\.(\d+)\.(hook_resid_pre|hook_attn_out|hook_mlp_out|mlp\.hook_post|hook_resid_post))$/;

/** Parses a site name; null when it is not one. */
export function parseSite(name: string): { layer: number | null; kind: string } | null {
  const m = SITE_RE.exec(name);
  if (!m) return null;
  if (m[2] === undefined) return { layer: null, kind: m[1] };
  return { layer: Number(m[2]), kind: m[3] };
}

/**
 * A hook sees every site's activation [batch, tokens, width] as the forward pass produces it
 * and returns the tensor the pass continues with (the same one, or a modified one).
 */
export type Hook = (site: string, x: tf.Tensor3D) => tf.Tensor3D;

/**
 * The sites a hook acts on, where its maker declared them (interventionHook does). The forward
 * pass uses this to run a block as one native graph when the hook leaves its inner sites alone
 * (native/block.ts); a hook without a declaration is taken to act on every site.
 */
const declaredSites = new WeakMap<Hook, ReadonlySet<string>>();

/** Declares that `hook` reads or changes only `sites` (it returns x unchanged elsewhere). */
export function hookOnSites(hook: Hook, sites: Iterable<string>): Hook {
  declaredSites.set(hook, new Set(sites));
  return hook;
}

/** Whether the hook may act on `name` (true for a hook that declared nothing). */
export function hookTouches(hook: Hook | undefined, name: string): boolean {
  if (!hook) return false;
  const s = declaredSites.get(hook);
  return s === undefined || s.has(name);
}

/** Runs hooks in order. */
export function chainHooks(...hooks: Array<Hook | undefined>): Hook | undefined {
  const hs = hooks.filter((h): h is Hook => h !== undefined);
  if (hs.length === 0) return undefined;
  if (hs.length === 1) return hs[0];
  const chained: Hook = (s, x) => hs.reduce((acc, h) => h(s, acc), x);
  const sets = hs.map((h) => declaredSites.get(h));
  if (sets.every((x) => x !== undefined)) hookOnSites(chained, sets.flatMap((x) => [...x!]));
  return chained;
}
