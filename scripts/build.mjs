#!/usr/bin/env node
/**
 * Bundles Fact Lens with esbuild. Each entry of TARGETS is one bundle; add the extension, the
 * engine server and the webviews there as they appear.
 *
 *   node scripts/build.mjs               build every target
 *   node scripts/build.mjs --watch       rebuild on change (esbuild's [watch] lines feed VS Code's $esbuild-watch matcher)
 *   node scripts/build.mjs --production  no source maps (every build is minified)
 *   node scripts/build.mjs --only cli    build the targets whose name contains "cli"
 */
import * as esbuild from 'esbuild';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(ROOT, 'package.json'));

const { values: flags } = parseArgs({
  options: {
    watch: { type: 'boolean', default: false },
    production: { type: 'boolean', default: false },
    only: { type: 'string' },
  },
});

/**
 * The native TensorFlow bindings are optional dependencies, loaded at run time only if they
 * install and load (engine/runtime/backend.ts); onnxruntime-node (engine/runtime/native) ships
 * a .node addon and its shared library; `webgpu` ships Dawn's dawn.node. They must never be bundled.
 */
const NATIVE_EXTERNALS = ['@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'onnxruntime-node', 'onnxruntime-common', 'webgpu'];

/**
 * What the engine bundles leave out or resolve differently, for a faster `factlens` start:
 *  - `mainFields`: the packages' ES module builds. tfjs-core's "main" is a CommonJS bundle, so each
 *    engine module's `import * as tf` became an interop object with a getter per export (~1,000,
 *    made again per importing module), and `@tensorflow/tfjs-core/dist/register_all_gradients`
 *    (an ES module file) brought in a second copy of part of tfjs-core beside it. The ES builds
 *    share one copy: the CLI bundle is 1.58 MB instead of 1.87 MB and loads ~30–60 ms sooner.
 *  - `node-fetch` (with whatwg-url and tr46's Unicode tables, ~300 KB): tfjs-core requires it only
 *    where the runtime has no global fetch, which Node ≥ 20 (package.json "engines") always has.
 */
const ENGINE_BUNDLE = {
  external: [...NATIVE_EXTERNALS, 'node-fetch'],
  mainFields: ['module', 'main'],
};

/** The WASM backend's binaries, copied beside the engine bundle (backend.ts looks in __dirname). */
const WASM_FILES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'];

function wasmAssets(outDir) {
  return WASM_FILES.map((f) => ({
    from: require.resolve(`@tensorflow/tfjs-backend-wasm/dist/${f}`),
    to: path.join(outDir, f),
  }));
}

/**
 * Build targets. `copy` lists files placed next to the bundle. Planned:
 *   { name: 'engine server', entry: 'engine/server/main.ts', outfile: 'dist/engine/server.js', ...engine node options }
 *   { name: 'extension', entry: 'extension/extension.ts', outfile: 'dist/extension.js', external: ['vscode'], ... }
 *   { name: 'webview trace', entry: 'webviews/trace/main.ts', outfile: 'dist/webviews/trace.js', platform: 'browser', format: 'iife' }
 */
const TARGETS = [
  {
    name: 'engine cli',
    entry: 'engine/cli/main.ts',
    outfile: 'dist/engine/cli.js',
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    ...ENGINE_BUNDLE,
    copy: wasmAssets('dist/engine'),
  },
  {
    // The engine process the client library spawns (engine/client); `factlens serve` runs the same server.
    name: 'engine server',
    entry: 'engine/server/main.ts',
    outfile: 'dist/engine/server.js',
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    ...ENGINE_BUNDLE,
    copy: wasmAssets('dist/engine'),
  },
  {
    // The VS Code extension host side (extension/): commands, prompt files, the engine client.
    // It spawns dist/engine/server.js; `vscode` is provided by the host.
    name: 'extension',
    entry: 'extension/extension.ts',
    outfile: 'dist/extension.js',
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['vscode'],
  },
  // One bundle per webview (webviews/<view>/main.ts → dist/webviews/<view>.js), loaded by nonce
  // under a CSP without 'unsafe-eval' (vega runs through vega-interpreter).
  ...['trace', 'edit'].map((view) => ({
    name: `webview ${view}`,
    entry: `webviews/${view}/main.ts`,
    outfile: `dist/webviews/${view}.js`,
    platform: 'browser',
    format: 'iife',
    target: 'chrome120',
  })),
];

function optionsFor(t) {
  return {
    absWorkingDir: ROOT,
    entryPoints: [t.entry],
    outfile: t.outfile,
    bundle: true,
    platform: t.platform,
    format: t.format,
    target: t.target,
    external: t.external ?? [],
    ...(t.mainFields ? { mainFields: t.mainFields } : {}),
    sourcemap: !flags.production,
    // Always minified: V8 parses and compiles a third less code, which is ~0.2 s of every
    // `factlens` start (the CLI bundle is 1.8 MB instead of 3.4 MB). keepNames keeps function
    // and class names for stack traces and `.name` checks; the source maps of non-production
    // builds map positions back (node --enable-source-maps). FACTLENS_NO_MINIFY=1 builds
    // readable bundles for CPU profiles (node --cpu-prof names the minified functions otherwise).
    minify: process.env.FACTLENS_NO_MINIFY !== '1',
    keepNames: true,
    logLevel: 'info',
    // The tfjs bundles reference optional Node modules they never load on our path.
    logOverride: { 'require-resolve-not-external': 'silent' },
    plugins: [keepSideEffectsPlugin(SIDE_EFFECT_IMPORTS), copyPlugin(t)],
  };
}

/**
 * Packages imported only for their side effect (registering a tfjs backend). Their
 * package.json "sideEffects" lists only the ESM registration files, so esbuild would drop
 * `import '@tensorflow/tfjs-backend-cpu'` from the bundle, and the cpu backend with it.
 */
const SIDE_EFFECT_IMPORTS = ['@tensorflow/tfjs-backend-cpu'];

function keepSideEffectsPlugin(names) {
  const filter = new RegExp(`^(${names.map((n) => n.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|')})$`);
  return {
    name: 'keep-side-effects',
    setup(build) {
      build.onResolve({ filter }, async (args) => {
        if (args.pluginData?.keepSideEffects) return undefined;
        const r = await build.resolve(args.path, {
          kind: args.kind,
          importer: args.importer,
          resolveDir: args.resolveDir,
          pluginData: { keepSideEffects: true },
        });
        if (r.errors.length) return { errors: r.errors };
        return { ...r, sideEffects: true };
      });
    },
  };
}

function copyPlugin(t) {
  return {
    name: 'copy-assets',
    setup(build) {
      build.onEnd((result) => {
        if (result.errors.length) return;
        for (const { from, to } of t.copy ?? []) {
          const dest = path.resolve(ROOT, to);
          fs.mkdirSync(path.dirname(dest), { recursive: true });
          fs.copyFileSync(from, dest);
        }
      });
    },
  };
}

const selected = TARGETS.filter((t) => !flags.only || t.name.includes(flags.only));
if (selected.length === 0) {
  console.error(`build: no target matches --only ${flags.only}; targets: ${TARGETS.map((t) => t.name).join(', ')}`);
  process.exit(2);
}

try {
  if (flags.watch) {
    for (const t of selected) {
      const ctx = await esbuild.context(optionsFor(t));
      await ctx.watch();
    }
  } else {
    await Promise.all(selected.map((t) => esbuild.build(optionsFor(t))));
    for (const t of selected) {
      for (const c of t.copy ?? []) console.log(`  copied ${path.relative(ROOT, c.from)} → ${c.to}`);
    }
  }
} catch {
  // esbuild has already printed the errors.
  process.exit(1);
}
