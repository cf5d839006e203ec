/**
 * The VS Code theme as the webview sees it: the `--vscode-*` CSS variables VS Code sets on the
 * view's <html>, and the `vscode-dark` / `vscode-light` / `vscode-high-contrast(-light)` class
 * on <body>. Charts take their text colours and fonts from here, so every theme reads well.
 */

export interface Theme {
  kind: 'dark' | 'light' | 'high-contrast' | 'high-contrast-light';
  highContrast: boolean;
  foreground: string;
  descriptionForeground: string;
  background: string;
  border: string;
  fontFamily: string;
  fontSize: number;
}

/** Fallbacks outside VS Code (tests, a plain browser): VS Code's Dark Modern values. */
const FALLBACK = {
  foreground: '#cccccc',
  descriptionForeground: '#9d9d9d',
  background: '#1f1f1f',
  border: '#6b6b6b',
  fontFamily: 'system-ui, -apple-system, "Segoe UI", Ubuntu, sans-serif',
  fontSize: 13,
};

function cssVar(style: CSSStyleDeclaration, name: string): string {
  return style.getPropertyValue(name).trim();
}

export function themeKind(body: HTMLElement = document.body): Theme['kind'] {
  const c = body.classList;
  if (c.contains('vscode-high-contrast-light')) return 'high-contrast-light';
  if (c.contains('vscode-high-contrast')) return 'high-contrast';
  if (c.contains('vscode-light')) return 'light';
  return 'dark';
}

/** Reads the current theme from the document. */
export function readTheme(doc: Document = document): Theme {
  const style = getComputedStyle(doc.documentElement);
  const kind = themeKind(doc.body);
  const v = (name: string, fallback: string) => cssVar(style, name) || fallback;
  const size = parseFloat(cssVar(style, '--vscode-font-size'));
  return {
    kind,
    highContrast: kind.startsWith('high-contrast'),
    foreground: v('--vscode-foreground', kind === 'light' ? '#3b3b3b' : FALLBACK.foreground),
    descriptionForeground: v('--vscode-descriptionForeground', FALLBACK.descriptionForeground),
    background: v('--vscode-editor-background', kind === 'light' ? '#ffffff' : FALLBACK.background),
    border: v('--vscode-contrastBorder', '') || v('--vscode-panel-border', '') || v('--vscode-widget-border', FALLBACK.border),
    fontFamily: v('--vscode-font-family', FALLBACK.fontFamily),
    fontSize: Number.isFinite(size) && size > 6 ? size : FALLBACK.fontSize,
  };
}

/** Calls `onChange` whenever VS Code switches theme (it rewrites body's class and the variables). */
export function watchTheme(onChange: (t: Theme) => void, doc: Document = document): () => void {
  let last = JSON.stringify(readTheme(doc));
  const check = () => {
    const t = readTheme(doc);
    const s = JSON.stringify(t);
    if (s !== last) {
      last = s;
      onChange(t);
    }
  };
  const obs = new MutationObserver(check);
  obs.observe(doc.body, { attributes: true, attributeFilter: ['class'] });
  obs.observe(doc.documentElement, { attributes: true, attributeFilter: ['style'] });
  return () => obs.disconnect();
}
