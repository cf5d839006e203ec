/**
 * Fuzzing the engine process over stdio with 10,000+ random and malformed messages: broken
 * framing, lying Content-Lengths, oversized messages, bytes that are not JSON, JSON that is
 * not JSON-RPC, unknown methods, wrong parameter types, prompts longer than the context,
 * stray notifications and responses, all written in random chunk sizes. Afterwards the
 * engine must be alive, must have answered every well-framed request exactly once, and must
 * answer `initialize` and `predict`.
 *
 * FACTLENS_FUZZ_SEED and FACTLENS_FUZZ_COUNT reproduce or lengthen a run.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CODES, METHODS, PROTOCOL_VERSION } from '../engine/protocol.js';
import { FrameParser, frame, startRawEngine, until, type RawEngine } from './helpers/engine-process.js';

const SEED = Number(process.env.FACTLENS_FUZZ_SEED ?? 20240611);
const COUNT = Number(process.env.FACTLENS_FUZZ_COUNT ?? 10_000);
const LIMIT = 65_536;

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)],
    chance: (p: number) => next() < p,
  };
}

type Rng = ReturnType<typeof rng>;

function randomString(r: Rng, max = 20): string {
  const alphabets = ['abcXYZ 019', '{}[]":,\\\r\n\t', 'éß漢字🙂\u0000\u2028', 'Content-Length: \r\n'];
  const a = r.pick(alphabets);
  return Array.from({ length: r.int(max) }, () => a[r.int(a.length)]).join('');
}

function randomJson(r: Rng, depth = 0): unknown {
  const k = r.int(depth > 3 ? 6 : 9);
  switch (k) {
    case 0:
      return null;
    case 1:
      return r.chance(0.5);
    case 2:
      return r.pick([0, -1, 1.5, 1e308, -1e-308, 2 ** 53 + 1, 42]);
    case 3:
    case 4:
      return randomString(r);
    case 5:
      return r.int(1000);
    case 6:
      return Array.from({ length: r.int(4) }, () => randomJson(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(4); i > 0; i--) {
        o[r.pick(['prompt', 'subject', 'k', 'samples', 'id', '__proto__', 'constructor', 'token', 'request', 'record', randomString(r, 8)])] =
          randomJson(r, depth + 1);
      }
      return o;
    }
  }
}

/** Valid parameters of each method, which the fuzzer then breaks. */
const TEMPLATES: Record<string, Record<string, unknown>> = {
  initialize: { protocolVersion: PROTOCOL_VERSION, clientName: 'fuzz' },
  'model/load': { dir: '/nonexistent/model' },
  'model/info': {},
  predict: { prompt: 'The capital of France is', k: 3 },
  trace: { prompt: 'The capital of France is', subject: 'France', samples: 2, kinds: ['hidden'] },
  traceAverage: { facts: [{ subject: 'France', prompt: 'The capital of {} is', object: 'Paris' }], samples: 2 },
  'edit/apply': { request: { prompt: 'The capital of {} is', subject: 'France', target: 'Rome' } },
  'edit/revert': { id: 'e1' },
  'edit/list': {},
  'eval/run': {},
  'stats/compute': { layers: [1], samples: 5 },
  'jobs/list': {},
};
/** Methods that may run with valid parameters during the fuzz (fast ones). */
const FAST = new Set(['initialize', 'model/info', 'jobs/list', 'edit/list', 'eval/run']);
const WRONG = [null, 42, -1, 1.5, true, [], {}, [1, 2], { nested: { x: 1 } }, 'x'.repeat(300)];

interface Built {
  bytes: Buffer;
  category: string;
  /** Request id that must get exactly one reply. */
  expect?: string | number;
  /** The JSON-RPC error code that reply must carry, when known. */
  code?: number;
}

function build(r: Rng, i: number, ctx: { validPredicts: number; cancelled: Set<string | number> }): Built {
  const id = r.chance(0.5) ? `r${i}` : 1_000_000 + i;
  const req = (method: string, params?: unknown) =>
    JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) });
  const roll = r.int(100);
  if (roll < 22) {
    // A real method with broken parameters.
    const method = r.pick(Object.keys(TEMPLATES));
    const p = structuredClone(TEMPLATES[method]);
    const keys = Object.keys(p);
    const how = r.int(4);
    if (how === 0 || keys.length === 0) p[`fuzz_${r.int(100)}`] = randomJson(r);
    else if (how === 1) p[r.pick(keys)] = r.pick(WRONG);
    else if (how === 2) delete p[r.pick(keys)];
    else p[r.pick(keys)] = randomJson(r);
    // Never let a slow job through by accident: keep an unknown field unless the method is fast.
    if (!FAST.has(method) && method !== 'predict') p.fuzz_guard = 1;
    return { bytes: frame(req(method, r.chance(0.1) ? [p] : p)), category: 'bad params', expect: id };
  }
  if (roll < 30) {
    const method = r.pick(['nope', 'model/', 'Predict', 'rpc.discover', '__proto__', 'constructor', 'toString', 'hasOwnProperty', randomString(r, 30) || 'x']);
    return { bytes: frame(req(method, randomJson(r))), category: 'unknown method', expect: id, code: METHODS.includes(method) ? undefined : undefined };
  }
  if (roll < 34) {
    // Fast valid requests.
    const method = r.pick(['initialize', 'model/info', 'jobs/list', 'eval/run', 'edit/list', 'predict']);
    if (method === 'predict') {
      if (ctx.validPredicts >= 40) return { bytes: frame(req('jobs/list', {})), category: 'valid', expect: id };
      ctx.validPredicts++;
      return { bytes: frame(req('predict', { prompt: r.pick(['The capital of France is', 'Paris is in', '🙂 x']), k: 1 + r.int(5) })), category: 'valid', expect: id };
    }
    return { bytes: frame(req(method, TEMPLATES[method])), category: 'valid', expect: id };
  }
  if (roll < 37) {
    const long = 'The capital of France is Paris. '.repeat(25 + r.int(30)); // > 128 tokens
    return {
      bytes: frame(r.chance(0.5) ? req('predict', { prompt: long }) : req('trace', { prompt: long, subject: 'France', samples: 2 })),
      category: 'prompt too long',
      expect: id,
      code: ERROR_CODES.PROMPT_TOO_LONG,
    };
  }
  if (roll < 47) {
    // JSON that is not a JSON-RPC request.
    const bodies: Array<[unknown, boolean]> = [
      [[{ jsonrpc: '2.0', id, method: 'model/info' }], false],
      [null, false],
      [42, false],
      ['a string', false],
      [{ jsonrpc: '1.0', id, method: 'model/info' }, true],
      [{ id, method: 'model/info' }, true],
      [{ jsonrpc: '2.0', id, method: 7 }, true],
      [{ jsonrpc: '2.0', id, method: '' }, true],
      [{ jsonrpc: '2.0', id: { nested: 1 }, method: 'model/info' }, false],
      [{ jsonrpc: '2.0', id: null, method: 'model/info' }, false],
      [{ jsonrpc: '2.0', id, method: 'model/info', params: 'text' }, true],
      [{ jsonrpc: '2.0', id, method: 'model/info', params: 5 }, true],
      [{ jsonrpc: '2.0', id, method: '$/cancelRequest', params: { id: 1 } }, true],
      [randomJson(r), false],
    ];
    const [body, answered] = r.pick(bodies);
    return {
      bytes: frame(JSON.stringify(body) ?? 'null'),
      category: 'not JSON-RPC',
      ...(answered ? { expect: id, code: ERROR_CODES.INVALID_REQUEST } : {}),
    };
  }
  if (roll < 57) {
    // Bodies that are not JSON.
    const good = req('model/info', {});
    const bodies = [
      good.slice(0, 1 + r.int(good.length - 2)),
      `${good}}`,
      "{'jsonrpc': '2.0'}",
      '{"jsonrpc":"2.0","id":1,"method":"x",}',
      randomString(r, 200),
      Buffer.from(Array.from({ length: 1 + r.int(200) }, () => r.int(256))).toString('latin1'),
      '['.repeat(5000),
      `${'['.repeat(3000)}${']'.repeat(3000)}`,
      '\uFEFF{"jsonrpc":"2.0"}',
      'NaN',
    ];
    return { bytes: frame(r.pick(bodies)), category: 'not JSON' };
  }
  if (roll < 66) {
    // Notifications: never answered.
    const target = r.pick([`r${r.int(i + 1)}`, 1_000_000 + r.int(i + 1), 'nope']);
    const bodies = [
      { jsonrpc: '2.0', method: '$/cancelRequest', params: { id: target } },
      { jsonrpc: '2.0', method: '$/cancelRequest', params: randomJson(r) },
      { jsonrpc: '2.0', method: '$/cancelRequest' },
      { jsonrpc: '2.0', method: '$/progress', params: { token: 'x', value: 1 } },
      { jsonrpc: '2.0', method: r.pick(METHODS), params: randomJson(r) },
      { jsonrpc: '2.0', method: randomString(r, 10) || 'n', params: randomJson(r) },
      { jsonrpc: '2.0', method: 'exit' },
    ];
    const body = r.pick(bodies);
    if (body === bodies[0]) ctx.cancelled.add(target);
    return { bytes: frame(JSON.stringify(body)), category: 'notification' };
  }
  if (roll < 70) {
    // Responses, although the engine sent no request.
    const bodies = [
      { jsonrpc: '2.0', id: r.int(100), result: randomJson(r) },
      { jsonrpc: '2.0', id: null, error: { code: -1, message: 'x' } },
      { jsonrpc: '2.0', id: 'x', error: randomJson(r) },
    ];
    return { bytes: frame(JSON.stringify(r.pick(bodies))), category: 'response' };
  }
  if (roll < 82) {
    // Broken framing.
    const body = Buffer.from(req('model/info', {}));
    const variants = [
      Buffer.from(`Content-Length: abc\r\n\r\n${body}`),
      Buffer.from(`Content-Length: -5\r\n\r\n${body}`),
      Buffer.from(`Content-Type: application/json\r\n\r\n${body}`),
      Buffer.from(`Content-Length: ${body.length}\r\nContent-Type: application/json; charset=latin1\r\n\r\n${body}`),
      Buffer.from(`Content-Length: ${body.length + 1 + r.int(50)}\r\n\r\n${body}`), // lies: too long
      Buffer.from(`Content-Length: ${Math.max(1, body.length - 1 - r.int(20))}\r\n\r\n${body}`), // lies: too short
      Buffer.from(`Content-Length: 99999999999\r\n\r\n${body}`), // lies: oversized
      Buffer.from(`Content-Length: 12345678901234567890\r\n\r\n${body}`),
      Buffer.from(`garbage line\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
      Buffer.from(`Content-Length: 0\r\n\r\n`),
      Buffer.from(`\r\n\r\n\r\n`),
      Buffer.from(`${'X'.repeat(9000)}\r\n\r\n`),
      Buffer.from(`Content-Length: ${body.length}\n\n${body}`),
    ];
    return { bytes: r.pick(variants), category: 'bad framing' };
  }
  if (roll < 85) {
    // Oversized, honestly framed: MESSAGE_TOO_LARGE, answered with the request's id.
    const pad = 'x'.repeat(LIMIT + r.int(10_000));
    return {
      bytes: frame(req('predict', { prompt: pad })),
      category: 'oversized',
      expect: id,
      code: ERROR_CODES.MESSAGE_TOO_LARGE,
    };
  }
  if (roll < 90) {
    // Raw noise between frames.
    return {
      bytes: Buffer.from(Array.from({ length: 1 + r.int(300) }, () => r.int(256))),
      category: 'noise',
    };
  }
  // Valid-envelope requests with random params for real methods (guarded like above).
  const method = r.pick(Object.keys(TEMPLATES));
  let params = randomJson(r);
  if (!FAST.has(method) && params && typeof params === 'object' && !Array.isArray(params)) {
    params = { ...(params as object), fuzz_guard: 1 };
  } else if (method === 'model/load' || (!FAST.has(method) && (params === null || typeof params !== 'object'))) {
    params = [params];
  }
  return { bytes: frame(req(method, params)), category: 'random params', expect: id };
}

let engine: RawEngine;

before(async () => {
  engine = startRawEngine(['--max-message-bytes', String(LIMIT), '--preload']);
  await engine.waitForLog(/preloaded tinyworld/, 180_000);
});

after(() => engine?.kill());

describe(`fuzz: ${COUNT} random and malformed messages (seed ${SEED})`, () => {
  test('the engine answers every well-framed request once, and stays up', { timeout: 600_000 }, async () => {
    const r = rng(SEED);
    const replies = new Map<string | number | null, Array<{ code?: number }>>();
    const parser = new FrameParser();
    let total = 0;
    engine.child.stdout!.on('data', (chunk: Buffer) => {
      for (const m of parser.push(chunk) as Array<{ id: string | number | null; error?: { code: number } }>) {
        total++;
        const list = replies.get(m.id) ?? [];
        list.push({ code: m.error?.code });
        replies.set(m.id, list);
      }
    });
    const send = (b: Buffer) =>
      new Promise<void>((resolve, reject) => engine.child.stdin!.write(b, (e) => (e ? reject(e) : resolve())));

    // Handshake first, so the fuzz reaches the handlers (a part of it also runs before: see below).
    const preInit = { jsonrpc: '2.0', id: 'pre-init', method: 'model/info', params: {} };
    await send(frame(JSON.stringify(preInit)));
    await until(() => replies.has('pre-init'), 30_000, 'the reply before initialize');
    assert.equal(replies.get('pre-init')![0].code, ERROR_CODES.NOT_INITIALIZED);
    await send(frame(JSON.stringify({ jsonrpc: '2.0', id: 'init', method: 'initialize', params: { protocolVersion: PROTOCOL_VERSION, clientName: 'fuzz' } })));
    await until(() => replies.has('init'), 30_000, 'the initialize reply');

    const started = Date.now();
    const categories: Record<string, number> = {};
    const expected = new Map<string | number, { category: string; code?: number }>();
    const ctx = { validPredicts: 0, cancelled: new Set<string | number>() };
    let bytes = 0;
    let pendingOut: Buffer[] = [];
    let pendingLen = 0;
    for (let i = 0; i < COUNT; i++) {
      const b = build(r, i, ctx);
      categories[b.category] = (categories[b.category] ?? 0) + 1;
      if (b.expect !== undefined) expected.set(b.expect, { category: b.category, code: b.code });
      pendingOut.push(b.bytes);
      pendingLen += b.bytes.length;
      bytes += b.bytes.length;
      // Write in random chunk sizes, splitting frames (and headers) anywhere.
      if (pendingLen > 1 + r.int(16_384) || i === COUNT - 1) {
        const all = Buffer.concat(pendingOut);
        pendingOut = [];
        pendingLen = 0;
        for (let at = 0; at < all.length; ) {
          const n = 1 + r.int(r.chance(0.2) ? 16 : 65_536);
          await send(all.subarray(at, at + n));
          at += n;
        }
      }
    }
    // The last frame may have been a lie; a well-framed request after it must still be read.
    await send(frame(JSON.stringify({ jsonrpc: '2.0', id: 'after', method: 'jobs/list', params: {} })));
    expected.set('after', { category: 'after' });

    await until(() => [...expected.keys()].every((id) => replies.has(id)), 300_000, 'a reply to every well-framed request').catch(
      (e) => {
        const missing = [...expected.entries()].filter(([id]) => !replies.has(id)).slice(0, 10);
        throw new Error(`${(e as Error).message}; missing: ${JSON.stringify(missing)}\n${engine.log.tail(40)}`);
      },
    );
    const elapsed = Date.now() - started;

    // Every expected request answered exactly once, with the expected error where one is known.
    const codes: Record<string, number> = {};
    for (const [id, want] of expected) {
      const got = replies.get(id)!;
      assert.equal(got.length, 1, `request ${id} (${want.category}) answered ${got.length} times`);
      // A fuzzed $/cancelRequest may have hit a request that was still queued or running.
      const cancelled = ctx.cancelled.has(id) && got[0].code === ERROR_CODES.CANCELLED;
      if (want.code !== undefined && !cancelled) assert.equal(got[0].code, want.code, `request ${id} (${want.category})`);
      const key = got[0].code === undefined ? 'result' : String(got[0].code);
      codes[key] = (codes[key] ?? 0) + 1;
    }
    const nullReplies = replies.get(null)?.length ?? 0;

    // Alive, answers initialize and predict.
    assert.equal(engine.child.exitCode, null, 'the engine process is alive');
    await send(frame(JSON.stringify({ jsonrpc: '2.0', id: 'final-init', method: 'initialize', params: { protocolVersion: PROTOCOL_VERSION } })));
    await send(frame(JSON.stringify({ jsonrpc: '2.0', id: 'final-predict', method: 'predict', params: { prompt: 'The capital of France is', k: 1 } })));
    await until(() => replies.has('final-init') && replies.has('final-predict'), 60_000, 'the final initialize and predict');
    assert.equal(replies.get('final-init')![0].code, undefined, 'initialize succeeded');
    assert.equal(replies.get('final-predict')![0].code, undefined, 'predict succeeded');
    assert.doesNotMatch(engine.log.text, /uncaught exception|unhandled rejection|reader: internal error/);
    assert.equal(engine.child.exitCode, null);

    const stats = {
      seed: SEED,
      messages: COUNT,
      bytes,
      seconds: +(elapsed / 1000).toFixed(1),
      categories,
      requestsExpectingReply: expected.size,
      repliesById: codes,
      repliesWithNullId: nullReplies,
      repliesTotal: total,
    };
    process.stderr.write(`# fuzz stats: ${JSON.stringify(stats)}\n`);
    assert.ok(COUNT >= 10_000 || process.env.FACTLENS_FUZZ_COUNT, 'at least 10,000 messages');
  });
});
