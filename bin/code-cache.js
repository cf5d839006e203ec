// Loads a CommonJS bundle (dist/engine/cli.js) with a V8 code cache, so that a CLI run does not
// compile ~1.3 MB of JavaScript from scratch each time: compiling and first running the bundle
// took 82 ms without a cache and 30 ms with one (tinyworld trace, Node 20), and the functions
// compiled lazily during the run come from the cache too, since it is written when the process exits.
//
// Node 22 has module.enableCompileCache(); Node 20, which the project supports, does not, and
// the v8-compile-cache package hooks every require() of the process. One bundle needs one cache
// entry, so this is vm.Script's own cachedData, with the checks V8 leaves to its caller:
//  - V8 accepts cached data whose source has the same *length*, so the entry's name carries a
//    hash of the bundle's text, the Node version and the architecture;
//  - V8 does not checksum the payload in release builds, so the entry starts with the SHA-256 of
//    the rest and a damaged entry is discarded, never handed to V8.
// Whatever goes wrong with the cache (unwritable folder, damaged entry, V8 refusing it), the
// bundle still runs, compiled as usual. FACTLENS_NO_CODE_CACHE=1 turns the cache off.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const vm = require('node:vm');
const Module = require('node:module');

/** The engine's cache folder (the same rules as engine/edit/hash.ts cacheRoot), subfolder code/. */
function codeCacheDir(env) {
  if (env.FACTLENS_CACHE_DIR) return path.join(path.resolve(env.FACTLENS_CACHE_DIR), 'code');
  if (env.XDG_CACHE_HOME) return path.join(path.resolve(env.XDG_CACHE_HOME), 'factlens', 'code');
  return path.join(os.homedir(), '.cache', 'factlens', 'code');
}

const sha256 = (data) => crypto.createHash('sha256').update(data).digest();

/** The cached data of entry `file`, or undefined when there is none or it is damaged (then removed). */
function readEntry(file, report) {
  let bytes;
  try {
    bytes = fs.readFileSync(file);
  } catch {
    report('none');
    return undefined;
  }
  const payload = bytes.subarray(32);
  if (bytes.length > 32 && sha256(payload).equals(bytes.subarray(0, 32))) return payload;
  report('damaged');
  try {
    fs.rmSync(file, { force: true });
  } catch {
    /* a read-only cache stays as it is; it is not used */
  }
  return undefined;
}

/** Writes entry `file` atomically (temporary file + rename) and removes older entries of the same bundle. */
function writeEntry(file, prefix, data) {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  fs.writeFileSync(tmp, Buffer.concat([sha256(data), data]));
  fs.renameSync(tmp, file);
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith(prefix) && path.join(dir, name) !== file && !name.includes('.tmp-')) fs.rmSync(path.join(dir, name), { force: true });
  }
}

/** require(bundle), compiled from (and then saved to) the code cache. */
function requireWithCodeCache(bundle, env = process.env) {
  if (env.FACTLENS_NO_CODE_CACHE === '1') return require(bundle);
  const source = fs.readFileSync(bundle, 'utf8');
  const prefix = `${path.basename(bundle, '.js')}-`;
  const key = sha256(`${process.version}\0${process.arch}\0${source}`).toString('hex').slice(0, 24);
  const entry = path.join(codeCacheDir(env), `${prefix}${key}.bin`);
  // FACTLENS_CODE_CACHE_REPORT=1: one stderr line saying what became of the entry (for tests).
  const report = (what) => env.FACTLENS_CODE_CACHE_REPORT === '1' && process.stderr.write(`code cache: ${what} ${entry}\n`);
  const cachedData = readEntry(entry, report);
  const script = new vm.Script(Module.wrap(source), {
    filename: bundle,
    cachedData,
  });
  // Node 20 loses import()'s loader callback in code restored from cached data
  // (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING): the bundle imports ESM-only packages through this
  // one instead (engine/util/esm-import.ts). This file sits in the bundle's package, so
  // specifiers resolve as they would from the bundle.
  globalThis[Symbol.for('factlens.importEsm')] = (specifier) => import(specifier);
  const mod = new Module(bundle, module);
  mod.filename = bundle;
  mod.paths = Module._nodeModulePaths(path.dirname(bundle));
  mod.loaded = true;
  require.cache[bundle] = mod;
  script.runInThisContext()(mod.exports, Module.createRequire(bundle), mod, bundle, path.dirname(bundle));
  if (cachedData !== undefined) report(script.cachedDataRejected ? 'rejected' : 'used');
  if (cachedData === undefined || script.cachedDataRejected) {
    // At exit the cache holds every function the run compiled, not only the top level.
    process.once('exit', () => {
      try {
        writeEntry(entry, prefix, script.createCachedData());
      } catch {
        /* no cache this time: the next run compiles again */
      }
    });
  }
  return mod.exports;
}

module.exports = { requireWithCodeCache, codeCacheDir };
