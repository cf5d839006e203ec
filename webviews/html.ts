/**
 * The HTML page of a webview: a strict Content Security Policy — nothing by default, scripts
 * only by nonce, no 'unsafe-eval' (vega renders through its CSP-safe interpreter), styles only
 * from the extension (Lit components use constructable stylesheets, which CSP does not gate) —
 * and one script, the view's bundle. Used by the extension host and by the component tests,
 * so the tests load the bundle under the same policy as VS Code.
 */
export interface WebviewHtmlOptions {
  title: string;
  /** URI of dist/webviews/<view>.js as the webview can load it. */
  scriptUri: string;
  /** webview.cspSource: the origin the webview serves extension files from. */
  cspSource: string;
  nonce: string;
}

export function contentSecurityPolicy(o: Pick<WebviewHtmlOptions, 'cspSource' | 'nonce'>): string {
  return [
    "default-src 'none'",
    `script-src 'nonce-${o.nonce}'`,
    `style-src ${o.cspSource}`,
    `img-src ${o.cspSource} data: blob:`,
    `font-src ${o.cspSource}`,
  ].join('; ');
}

const escapeAttr = (s: string) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

export function webviewHtml(o: WebviewHtmlOptions): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${escapeAttr(contentSecurityPolicy(o))}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>${escapeAttr(o.title)}</title>
</head>
<body>
<script nonce="${escapeAttr(o.nonce)}" src="${escapeAttr(o.scriptUri)}"></script>
</body>
</html>`;
}
