/**
 * A socket engine lets nobody in without its token (issue #13, item 3): real engine processes
 * on loopback sockets, driven with raw frames and with the client library.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { EngineError, type EngineClient } from '../engine/client/index.js';
import { EvalRun, PROTOCOL_VERSION, TraceAverage } from '../engine/protocol.js';
import { connectClient, frame, FrameParser, startRawEngine, until, type RawEngine } from './helpers/engine-process.js';

let work: string;
let engine: RawEngine;
let port: number;
let tokenFile: string;
let token: string;

const envWithout = (extra: NodeJS.ProcessEnv = {}) => {
  const env: NodeJS.ProcessEnv = { ...process.env, FACTLENS_CACHE_DIR: path.join(work, 'cache'), ...extra };
  if (!('FACTLENS_TOKEN' in extra)) delete env.FACTLENS_TOKEN;
  return env;
};

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-socket-'));
  // No token given: the engine must generate one, not serve everyone.
  engine = startRawEngine(['--listen', '127.0.0.1:0', '--preload'], envWithout());
  const m = await engine.waitForLog(/listening on 127\.0\.0\.1:(\d+) \(token required: from (.+)\)/);
  port = Number(m[1]);
  tokenFile = m[2];
  token = fs.readFileSync(tokenFile, 'utf8').trim();
});
after(() => {
  engine?.kill();
  fs.rmSync(work, { recursive: true, force: true });
});

/** Sends frames on a fresh connection; collects replies until the engine closes it (or timeoutMs). */
async function exchange(messages: unknown[], timeoutMs = 60_000): Promise<{ replies: any[]; closed: boolean }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  const parser = new FrameParser();
  const replies: any[] = [];
  let closed = false;
  socket.on('data', (d) => replies.push(...parser.push(d)));
  socket.on('close', () => (closed = true));
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  socket.write(Buffer.concat(messages.map((m) => frame(JSON.stringify(m)))));
  await until(() => closed, timeoutMs, 'the engine to close the connection').catch(() => {});
  socket.destroy();
  return { replies, closed };
}
const init = (id: number, tok?: string) => ({ jsonrpc: '2.0', id, method: 'initialize', params: { protocolVersion: PROTOCOL_VERSION, ...(tok === undefined ? {} : { token: tok }) } });

describe('a socket always needs a token', () => {
  test('without one given, a ≥128-bit token is generated into a 0600 file (not printed to a log); initialize without it is refused', async () => {
    assert.equal(fs.statSync(tokenFile).mode & 0o777, 0o600);
    assert.ok(Buffer.from(token, 'base64url').length >= 16, `token of ${token.length} characters`);
    assert.ok(!engine.log.text.includes(token), 'the token is not in the log');
    const { replies, closed } = await exchange([init(1)]);
    assert.equal(replies[0].error.data.code, 'UNAUTHORIZED');
    assert.ok(closed);
    const { client } = await connectClient({ host: '127.0.0.1', port, token });
    assert.equal(client.info!.connection.transport, 'socket');
    await client.stop();
  });

  test('a token on the command line, or a short one, is refused at start', async () => {
    const argv = startRawEngine(['--listen', '127.0.0.1:0', '--token', 'x'.repeat(40)], envWithout());
    assert.equal((await argv.exited).code, 2);
    assert.match(argv.log.text, /--token is not accepted: a command line is visible to every user/);
    const short = startRawEngine(['--listen', '127.0.0.1:0'], envWithout({ FACTLENS_TOKEN: 'x' }));
    assert.equal((await short.exited).code, 2);
    assert.match(short.log.text, /the token from FACTLENS_TOKEN is 1 characters; a token needs at least 32/);
    const open = path.join(work, 'open-token');
    fs.writeFileSync(open, `${'y'.repeat(40)}\n`, { mode: 0o644 });
    fs.chmodSync(open, 0o644);
    const loose = startRawEngine(['--listen', '127.0.0.1:0', '--token-file', open], envWithout());
    assert.equal((await loose.exited).code, 2);
    assert.match(loose.log.text, /can be read by other users \(mode 644\); chmod 600 it/);
  });
});

describe('one attempt per connection, few pending connections', () => {
  test('20 pipelined guesses, the right token last: none is accepted, the connection is closed', async () => {
    const guesses = Array.from({ length: 19 }, (_, i) => init(i + 1, `wrong-${i}-${'z'.repeat(32)}`));
    const { replies, closed } = await exchange([...guesses, init(20, token)]);
    assert.ok(closed, 'closed after the failed attempt');
    assert.ok(replies.length >= 1);
    assert.ok(replies.every((r) => r.error?.data?.code === 'UNAUTHORIZED'), JSON.stringify(replies.map((r) => r.error?.message ?? r.result)));
    // Only the first was compared with the token: the log names one refusal for this connection.
    const refusals = engine.log.lines.filter((l) => /refused .*wrong token/.test(l));
    assert.ok(refusals.length >= 1);
  });

  test('a request other than initialize first closes the connection', async () => {
    const { replies, closed } = await exchange([{ jsonrpc: '2.0', id: 1, method: 'jobs/list' }, init(2, token)]);
    assert.ok(closed);
    assert.equal(replies[0].error.data.code, 'NOT_INITIALIZED');
    assert.ok(!replies.some((r) => r.result), 'the initialize behind it was not served');
  });

  test('idle unauthenticated connections: at most 16 are kept, and none beyond a few seconds', async () => {
    const sockets = await Promise.all(
      Array.from({ length: 40 }, async () => {
        const s = net.connect({ host: '127.0.0.1', port });
        const state = { s, closed: false, at: 0 };
        s.on('close', () => {
          state.closed = true;
          state.at = Date.now();
        });
        s.on('error', () => {});
        await new Promise((r) => s.once('connect', r));
        return state;
      }),
    );
    const t0 = Date.now();
    await until(() => sockets.filter((x) => x.closed).length >= 24, 3_000, 'connections beyond the cap to be closed');
    await until(() => sockets.every((x) => x.closed), 15_000, 'every idle connection to be closed');
    for (const x of sockets) x.s.destroy();
    assert.ok(Date.now() - t0 < 15_000);
    // The engine still serves an authenticated client.
    const { client } = await connectClient({ host: '127.0.0.1', port, token });
    await client.stop();
  });
});

describe('errors never quote the files a client names', () => {
  let client: EngineClient;
  before(async () => ({ client } = await connectClient({ host: '127.0.0.1', port, token })));
  after(() => client?.stop());

  test('eval/run and traceAverage on a private text file: the errors name it, but show none of its content', async () => {
    const secret = path.join(work, 'passwd');
    fs.writeFileSync(secret, 'root:SECRETx:0:0:root:/root:/bin/bash\nsvc:SECRETy:1:1::/:/bin/sh\n');
    const e = await client.request(EvalRun, { dataset: secret, method: 'none' }).then(
      () => assert.fail('evaluated a password file'),
      (err: EngineError) => err,
    );
    assert.ok(e instanceof EngineError);
    assert.ok(e.message.includes(secret), e.message);
    assert.doesNotMatch(JSON.stringify({ m: e.message, d: e.data }), /SECRET|root:|bin\/bash/);
    const avg = await client.request(TraceAverage, { factsFile: secret, samples: 1, limit: 1 }).then(
      (r) => JSON.stringify(r),
      (err: EngineError) => JSON.stringify({ m: err.message, d: err.data }),
    );
    assert.doesNotMatch(avg, /SECRET|root:|bin\/bash/);
  });
});
