/**
 * Rendering Vega-Lite charts in a webview under the strict CSP: vega runs through its
 * CSP-safe expression interpreter (`ast: true` + vega-interpreter), so no 'unsafe-eval'.
 * Shared by the trace heatmaps and the edit view's bar charts.
 */
import { parse, View, type Item } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { expressionInterpreter } from 'vega-interpreter';

/** Compiles and renders a Vega-Lite spec, CSP-safe. `container` null: headless (for exports). */
export async function renderSpec(
  spec: Record<string, unknown>,
  container: HTMLElement | null,
  renderer: 'svg' | 'canvas' | 'none' = 'svg',
  tooltip?: (handler: unknown, event: MouseEvent, item: Item | null | undefined, value: unknown) => void,
): Promise<View> {
  const vg = compile(spec as unknown as TopLevelSpec).spec;
  const runtime = parse(vg, undefined, { ast: true });
  const view = new View(runtime, {
    expr: expressionInterpreter,
    renderer: container ? renderer : 'none',
    container: container ?? undefined,
    hover: true,
    logLevel: 1, // errors only
  });
  // Before the first run: setting a tooltip handler on a rendered view wipes its SVG.
  if (tooltip) view.tooltip(tooltip as Parameters<View['tooltip']>[0]);
  await view.runAsync();
  return view;
}

