/**
 * The registered benchmark sections, in run order. To add one (causal tracing, ROME edits, ...):
 * write bench/<name>.ts exporting a `Section` (see bench/types.ts) and list it here.
 */
import type { Section } from './types.js';
import { forwardSection } from './forward.js';
import { traceSection } from './trace.js';
import { editSection } from './edit.js';
import { computeSection } from './compute.js';
import { xlSection } from './xl.js';
import { threadsSection } from './threads.js';
import { specificitySection } from './specificity.js';
import { cliSection } from './cli-trace.js';

export const SECTIONS: Section[] = [forwardSection, traceSection, editSection, computeSection, threadsSection, xlSection, specificitySection, cliSection];
