/**
 * The shipped entry points: dist/engine/server.js (what the extension spawns) and
 * `factlens serve` (bin/factlens.js → dist/engine/cli.js) both speak the protocol. Builds
 * the two engine bundles first, as test/cli.test.ts does.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { EngineClient } from '../engine/client/index.js';
import { ModelLoad, Predict, PROTOCOL_VERSION } from '../engine/protocol.js';
import { BACKEND_ARGS, BUNDLE_ENTRY, ROOT } from './helpers/engine-process.js';

before(async () => {
  await promisify(execFile)(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs'), '--only', 'engine'], { cwd: ROOT });
  assert.ok(fs.existsSync(BUNDLE_ENTRY), 'the build wrote dist/engine/server.js');
});

async function roundTrip(enginePath: string, args: string[]): Promise<void> {
  const client = await EngineClient.spawn({ enginePath, args: [...args, ...BACKEND_ARGS], cwd: ROOT, clientName: 'bundle-test', handshakeTimeoutMs: 120_000 });
  try {
    assert.equal(client.info!.protocolVersion, PROTOCOL_VERSION);
    const info = await client.request(ModelLoad, {});
    assert.equal(info.name, 'tinyworld', 'the bundle finds the embedded model');
    const r = await client.request(Predict, { prompt: 'The capital of France is', k: 1 });
    assert.equal(r.top[0].token, ' Paris');
  } finally {
    await client.stop();
  }
  assert.equal(client.state, 'stopped');
}

describe('shipped engine entry points', () => {
  test('dist/engine/server.js: handshake, model/load, predict, shutdown', async () => {
    await roundTrip(BUNDLE_ENTRY, []);
  });

  test('factlens serve (bin/factlens.js): the same server', async () => {
    await roundTrip(path.join(ROOT, 'bin', 'factlens.js'), ['serve']);
  });
});
