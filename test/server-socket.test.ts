/**
 * Socket mode (`serve --listen HOST:PORT`): the token check in initialize (constant-time;
 * wrong or missing token refused and the connection closed), the refusal to bind a
 * non-loopback address without a token, and two clients on one engine whose jobs, progress
 * and results stay their own. Real engine processes throughout.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { CancellationTokenSource } from 'vscode-jsonrpc';
import { EngineError, type EngineClient } from '../engine/client/index.js';
import { ERROR_CODES, JobsList, ModelInfoRequest, Predict, PROTOCOL_VERSION, Trace, type JobInfo } from '../engine/protocol.js';
import { connectClient, frame, FrameParser, startRawEngine, until, type RawEngine } from './helpers/engine-process.js';

const TOKEN = 'correct horse battery staple 0123456789';

let engine: RawEngine;
let port: number;

before(async () => {
  // The token comes from the environment here; a token file is covered below.
  engine = startRawEngine(['--listen', '127.0.0.1:0', '--preload'], { ...process.env, FACTLENS_TOKEN: TOKEN });
  const m = await engine.waitForLog(/listening on 127\.0\.0\.1:(\d+) \(token required: from FACTLENS_TOKEN\)/);
  port = Number(m[1]);
});

after(() => engine?.kill());

/**
 * A raw socket exchange: sends frames, collects replies until done(replies) holds; with
 * waitForClose, then waits (up to 10 s) for the engine to close the connection.
 */
async function raw(messages: unknown[], done: (replies: any[]) => boolean, waitForClose = false): Promise<{ replies: any[]; closed: boolean }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  const parser = new FrameParser();
  const replies: any[] = [];
  let closed = false;
  socket.on('data', (d) => replies.push(...parser.push(d)));
  socket.on('close', () => (closed = true));
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  for (const m of messages) socket.write(frame(JSON.stringify(m)));
  await until(() => done(replies) || closed, 30_000, 'replies from the socket engine');
  if (waitForClose) await until(() => closed, 10_000, 'the engine to close the connection').catch(() => {});
  socket.destroy();
  return { replies, closed };
}

describe('socket mode: authentication', () => {
  test('a wrong token is refused with UNAUTHORIZED and the connection is closed', async () => {
    const { replies, closed } = await raw(
      [
        { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: PROTOCOL_VERSION, token: 'wrong' } },
        { jsonrpc: '2.0', id: 2, method: 'model/info', params: {} },
      ],
      (r) => r.length >= 1,
      true,
    );
    assert.equal(replies[0].id, 1);
    assert.equal(replies[0].error.code, ERROR_CODES.UNAUTHORIZED);
    assert.equal(replies[0].error.data.code, 'UNAUTHORIZED');
    assert.equal(replies[0].error.data.field, 'token');
    assert.ok(!replies.some((r) => r.id === 2 && r.result !== undefined), 'nothing was served after the refusal');
    assert.ok(closed, 'the engine closed the connection');
  });

  test('the client library reports a wrong token as UNAUTHORIZED, without retrying', async () => {
    await assert.rejects(connectClient({ host: '127.0.0.1', port, token: 'nope' }), (e: EngineError) => {
      assert.equal(e.kind, 'UNAUTHORIZED');
      assert.match(e.message, /wrong token/);
      return true;
    });
  });

  test('no token: UNAUTHORIZED telling how to pass one', async () => {
    await assert.rejects(connectClient({ host: '127.0.0.1', port }), (e: EngineError) => {
      assert.equal(e.kind, 'UNAUTHORIZED');
      assert.match(e.message, /requires a token.*FACTLENS_TOKEN, or its token file/);
      return true;
    });
  });

  test('requests before initialize: NOT_INITIALIZED', async () => {
    const { replies } = await raw([{ jsonrpc: '2.0', id: 7, method: 'predict', params: { prompt: 'x' } }], (r) => r.length >= 1);
    assert.equal(replies[0].error.code, ERROR_CODES.NOT_INITIALIZED);
  });

  test('a non-loopback address with a token file: clients with its token get in', async () => {
    const env = { ...process.env };
    delete env.FACTLENS_TOKEN;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-token-'));
    const file = path.join(dir, 'token');
    fs.writeFileSync(file, 'a-token-for-this-test-0123456789abcdef\n', { mode: 0o600 });
    const ok = startRawEngine(['--listen', '0.0.0.0:0', '--token-file', file], env);
    try {
      const m = await ok.waitForLog(/listening on 0\.0\.0\.0:(\d+) \(token required: from .*token\)/, 60_000);
      const c = await connectClient({ host: '127.0.0.1', port: Number(m[1]), token: 'a-token-for-this-test-0123456789abcdef' });
      assert.equal(c.client.info!.connection.transport, 'socket');
      await c.client.stop();
    } finally {
      ok.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('socket mode: two clients on one engine', () => {
  let alice: EngineClient;
  let bob: EngineClient;
  let carol: EngineClient;

  before(async () => {
    ({ client: alice } = await connectClient({ host: '127.0.0.1', port, token: TOKEN, clientName: 'alice' }));
    ({ client: bob } = await connectClient({ host: '127.0.0.1', port, token: TOKEN, clientName: 'bob' }));
    ({ client: carol } = await connectClient({ host: '127.0.0.1', port, token: TOKEN, clientName: 'carol' }));
    await until(async () => (await alice.request(ModelInfoRequest, {})) !== null, 180_000, 'the preloaded model');
  });

  after(async () => {
    await alice?.stop();
    await bob?.stop();
    await carol?.stop();
  });

  /**
   * A job that holds the queue until cancelled: the most samples a trace takes, far longer
   * than queueing a few requests takes anywhere. Short traces finish in a fraction of a second
   * on the native path, so a test that needs jobs to wait in the queue must not rely on one
   * of them still running when it looks.
   */
  const BLOCKER = { prompt: 'The official language of France is', subject: 'France', samples: 1000 };
  async function holdQueue(who: EngineClient): Promise<{ release: () => void; done: Promise<unknown> }> {
    const cts = new CancellationTokenSource();
    const done = who.request(Trace, BLOCKER, { token: cts.token }).catch((e: EngineError) => e);
    await until(async () => (await who.request(JobsList, {})).jobs.some((j) => j.mine && j.state === 'running'), 60_000, 'the blocking trace to run');
    return { release: () => cts.cancel(), done };
  }

  test('each sees its own jobs as its own, progress and results go to the right client', async () => {
    const progress = { alice: new Set<string>(), bob: new Set<string>() };
    const fast = { samples: 2, kinds: ['hidden' as const] };
    // Carol's trace runs while alice's and bob's wait behind it, so both are listed at once.
    const blocker = await holdQueue(carol);
    const a = alice.request(Trace, { prompt: 'The capital of France is', subject: 'France', ...fast }, {
      onProgress: (_f, _m, p) => progress.alice.add(p.jobId),
    });
    const b = bob.request(Trace, { prompt: 'The capital of Germany is', subject: 'Germany', ...fast }, {
      onProgress: (_f, _m, p) => progress.bob.add(p.jobId),
    });
    let seenByAlice: JobInfo[] = [];
    let seenByBob: JobInfo[] = [];
    await until(
      async () => {
        seenByAlice = (await alice.request(JobsList, {})).jobs;
        seenByBob = (await bob.request(JobsList, {})).jobs;
        return seenByAlice.length === 3 && seenByBob.length === 3;
      },
      60_000,
      'both traces in the shared queue',
    );
    // One queue, one job running at a time, owners named.
    assert.deepEqual(seenByAlice.map((j) => j.state).sort(), ['queued', 'queued', 'running']);
    assert.equal(seenByAlice.find((j) => j.state === 'running')?.owner.client, 'carol');
    const aliceJob = seenByAlice.find((j) => j.mine)!;
    const bobJob = seenByBob.find((j) => j.mine)!;
    assert.equal(seenByAlice.filter((j) => j.mine).length, 1);
    assert.equal(seenByBob.filter((j) => j.mine).length, 1);
    assert.equal(aliceJob.owner.client, 'alice');
    assert.equal(bobJob.owner.client, 'bob');
    assert.notEqual(aliceJob.id, bobJob.id);
    assert.notEqual(aliceJob.owner.connection, bobJob.owner.connection);
    assert.equal(seenByBob.find((j) => j.id === aliceJob.id)?.mine, false, "bob sees alice's job as not his");
    assert.equal(aliceJob.summary, 'The capital of France is');
    assert.equal(bobJob.summary, 'The capital of Germany is');

    blocker.release();
    const eb = await blocker.done;
    assert.ok(eb instanceof EngineError && eb.kind === 'CANCELLED', String(eb));
    const [ra, rb] = await Promise.all([a, b]);
    assert.equal(ra.prompt, 'The capital of France is');
    assert.equal(ra.answer.token, ' Paris');
    assert.equal(rb.prompt, 'The capital of Germany is');
    assert.equal(rb.answer.token, ' Berlin');
    assert.deepEqual([...progress.alice], [aliceJob.id], "alice received progress of her job only");
    assert.deepEqual([...progress.bob], [bobJob.id], "bob received progress of his job only");
  });

  test("one client's cancellation and disconnection do not touch the other's jobs", async () => {
    const cts = new CancellationTokenSource();
    const a = alice.request(Trace, BLOCKER, { token: cts.token }).catch((e: EngineError) => e);
    await until(async () => (await bob.request(JobsList, {})).jobs.some((j) => j.state === 'running'), 60_000, "alice's trace to run");
    const b = bob.request(Trace, { prompt: 'The capital of Germany is', subject: 'Germany', samples: 2, kinds: ['hidden'] });
    // predict from bob jumps the queue while alice's trace runs.
    assert.equal((await bob.request(Predict, { prompt: 'The capital of Germany is', k: 1 })).top[0].token, ' Berlin');
    cts.cancel();
    const ea = await a;
    assert.ok(ea instanceof EngineError && ea.kind === 'CANCELLED', String(ea));
    const rb = await b;
    assert.equal(rb.answer.token, ' Berlin', "bob's trace ran after alice cancelled hers");

    // Alice queues a job behind bob's and disconnects: her job is cancelled, bob's complete.
    const blocker = await holdQueue(bob);
    const bobNext = bob.request(Trace, { prompt: 'The capital of Italy is', subject: 'Italy', samples: 2, kinds: ['hidden'] });
    const aliceQueued = alice.request(Trace, BLOCKER).catch((e: EngineError) => e);
    await until(async () => (await bob.request(JobsList, {})).jobs.length === 3, 30_000, 'three jobs queued');
    await alice.stop();
    const ae = await aliceQueued;
    assert.ok(ae instanceof EngineError, 'alice got an error for her pending job');
    await until(async () => (await bob.request(JobsList, {})).jobs.length === 2, 30_000, "alice's job to be dropped");
    assert.ok((await bob.request(JobsList, {})).jobs.every((j) => j.mine), 'only bob\'s jobs are left');
    blocker.release();
    await blocker.done;
    assert.equal((await bobNext).answer.token, ' Rome');
    await until(async () => (await bob.request(JobsList, {})).jobs.length === 0, 30_000, 'the queue to empty');
    assert.equal(bob.state, 'ready');
  });
});
