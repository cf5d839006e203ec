/**
 * Headless Chromium for the webview component tests: Debian's /usr/bin/chromium driven by
 * playwright-core (no browser download), and a tiny HTTP server on 127.0.0.1 that serves a
 * webview page — the same HTML and CSP the extension uses — with a stand-in for VS Code's
 * `acquireVsCodeApi` that records posted messages and keeps state.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { webviewHtml } from '../../webviews/html.js';

export const ROOT = path.resolve(__dirname, '..', '..');

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-dev-shm-usage',
];

/** The Chromium binary, or null (the tests skip, unless FACTLENS_REQUIRE_CHROMIUM is set). */
export function chromiumPath(): string | null {
  for (const p of [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser']) {
    if (p && fs.existsSync(p)) return p;
  }
  return null;
}

/** Builds the webview bundle if it is missing or older than its sources. */
export function ensureWebviewBundle(view = 'trace'): string {
  const out = path.join(ROOT, 'dist', 'webviews', `${view}.js`);
  const newest = (dir: string): number =>
    fs.readdirSync(dir, { withFileTypes: true }).reduce((m, e) => {
      const p = path.join(dir, e.name);
      return Math.max(m, e.isDirectory() ? newest(p) : fs.statSync(p).mtimeMs);
    }, 0);
  const srcTime = Math.max(newest(path.join(ROOT, 'webviews')), newest(path.join(ROOT, 'engine', 'protocol')));
  if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < srcTime) {
    execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs'), '--only', `webview ${view}`], { cwd: ROOT, stdio: 'pipe' });
  }
  return out;
}

export interface WebviewServer {
  url: string;
  origin: string;
  close(): Promise<void>;
}

/** Theme variables as VS Code sets them on a webview's <html> (a subset), per theme. */
export const THEMES: Record<'dark' | 'light' | 'high-contrast', { bodyClass: string; vars: Record<string, string> }> = {
  dark: {
    bodyClass: 'vscode-dark',
    vars: {
      '--vscode-foreground': '#cccccc',
      '--vscode-descriptionForeground': '#9d9d9d',
      '--vscode-editor-background': '#1f1f1f',
      '--vscode-panel-border': '#2b2b2b',
      '--vscode-font-family': 'system-ui, "Ubuntu", "DejaVu Sans", sans-serif',
      '--vscode-font-size': '13px',
      '--vscode-editor-font-family': '"DejaVu Sans Mono", monospace',
      '--vscode-textLink-foreground': '#4daafc',
      '--vscode-errorForeground': '#f85149',
      '--vscode-button-background': '#0078d4',
      '--vscode-button-foreground': '#ffffff',
      '--vscode-input-background': '#313131',
      '--vscode-input-foreground': '#cccccc',
      '--vscode-settings-textInputBackground': '#313131',
      '--vscode-settings-textInputForeground': '#cccccc',
      '--vscode-button-secondaryBackground': '#313131',
      '--vscode-button-secondaryForeground': '#cccccc',
      '--vscode-charts-green': '#89d185',
    },
  },
  light: {
    bodyClass: 'vscode-light',
    vars: {
      '--vscode-foreground': '#3b3b3b',
      '--vscode-descriptionForeground': '#717171',
      '--vscode-editor-background': '#ffffff',
      '--vscode-panel-border': '#e5e5e5',
      '--vscode-font-family': 'system-ui, "Ubuntu", "DejaVu Sans", sans-serif',
      '--vscode-font-size': '13px',
      '--vscode-editor-font-family': '"DejaVu Sans Mono", monospace',
      '--vscode-textLink-foreground': '#005fb8',
      '--vscode-errorForeground': '#f85149',
      '--vscode-button-background': '#005fb8',
      '--vscode-button-foreground': '#ffffff',
      '--vscode-input-background': '#ffffff',
      '--vscode-input-foreground': '#3b3b3b',
      '--vscode-settings-textInputBackground': '#ffffff',
      '--vscode-settings-textInputForeground': '#3b3b3b',
      '--vscode-settings-textInputBorder': '#cecece',
      '--vscode-button-secondaryBackground': '#e5e5e5',
      '--vscode-button-secondaryForeground': '#3b3b3b',
      '--vscode-button-border': '#0000001a',
      '--vscode-charts-green': '#388a34',
    },
  },
  'high-contrast': {
    bodyClass: 'vscode-high-contrast',
    vars: {
      '--vscode-foreground': '#ffffff',
      '--vscode-descriptionForeground': '#ffffff',
      '--vscode-editor-background': '#000000',
      '--vscode-contrastBorder': '#6fc3df',
      '--vscode-font-family': 'system-ui, "Ubuntu", "DejaVu Sans", sans-serif',
      '--vscode-font-size': '13px',
      '--vscode-textLink-foreground': '#21a6ff',
      '--vscode-errorForeground': '#f48771',
      '--vscode-charts-green': '#89d185',
    },
  },
};

/**
 * Serves the trace webview: GET / is the page (CSP as in VS Code; the stand-in API is an
 * inline script allowed by the same nonce), GET /trace.js the bundle. `?state=KEY` starts the
 * page with a state stored by `setState` under KEY in sessionStorage (a reload "restores").
 */
export async function serveWebview(bundle: string): Promise<WebviewServer> {
  const nonce = 'testnonce0123456789abcdefABCDEF0';
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/trace.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(fs.readFileSync(bundle));
      return;
    }
    if (url.pathname === '/') {
      const origin = `http://${req.headers.host}`;
      const page = webviewHtml({ title: 'test', scriptUri: `${origin}/trace.js`, cspSource: origin, nonce });
      const theme = THEMES[(url.searchParams.get('theme') ?? 'dark') as keyof typeof THEMES] ?? THEMES.dark;
      const stub = `<script nonce="${nonce}">
        window.__sent = [];
        document.body.className = ${JSON.stringify(theme.bodyClass)};
        for (const [k, v] of Object.entries(${JSON.stringify(theme.vars)})) document.documentElement.style.setProperty(k, v);
        // What VS Code's default webview stylesheet does.
        document.body.style.backgroundColor = 'var(--vscode-editor-background)';
        document.body.style.color = 'var(--vscode-foreground)';
        document.body.style.fontFamily = 'var(--vscode-font-family)';
        document.body.style.margin = '0';
        window.acquireVsCodeApi = () => ({
          postMessage: (m) => window.__sent.push(JSON.parse(JSON.stringify(m))),
          getState: () => { const s = sessionStorage.getItem('fl-state'); return s ? JSON.parse(s) : undefined; },
          setState: (s) => sessionStorage.setItem('fl-state', JSON.stringify(s)),
        });
      </script>`;
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(page.replace('<body>', `<body>\n${stub}`));
      return;
    }
    res.writeHead(url.pathname === '/favicon.ico' ? 204 : 404);
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  return {
    url: `${origin}/`,
    origin,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
