/**
 * Reading framed JSON-RPC messages defensively. vscode-jsonrpc's own reader trusts its input:
 * a body that is not JSON, a header without Content-Length or a message of any size either
 * stalls it or ends up as a reader error nobody answers. This reader:
 *
 *  - rejects a Content-Length above the limit with a MESSAGE_TOO_LARGE reply (carrying the
 *    request id when it can be read from the first bytes) and discards the body without
 *    buffering it;
 *  - answers a body that is not JSON with PARSE_ERROR, and a JSON value that is not a
 *    JSON-RPC 2.0 message (wrong jsonrpc, bad id or method, params not structured, batches)
 *    with INVALID_REQUEST, instead of passing it to the connection;
 *  - resynchronises after garbage: a frame header `Content-Length: <digits>\r\n` cannot occur
 *    inside a valid JSON body (JSON strings cannot hold a raw CR LF), so when one shows up
 *    inside a body, or after an unreadable header, reading restarts there. A frame whose
 *    Content-Length lies (too long, or never completed) therefore costs only that frame.
 *
 * Replies are written through the connection's own writer, so they are serialised with the
 * connection's responses.
 */
import {
  AbstractMessageReader,
  type DataCallback,
  type Disposable,
  type Message,
  type MessageReader,
  type ResponseMessage,
} from 'vscode-jsonrpc';
import { ERROR_CODES, type ProtocolErrorCode } from '../protocol.js';

export interface FrameReaderOptions {
  /** Largest accepted Content-Length, in bytes. */
  maxMessageBytes: number;
  /** Largest header block before the reader gives up on it as garbage. */
  maxHeaderBytes?: number;
  /** Sends a reply the reader makes itself (protocol errors). */
  reply: (message: ResponseMessage) => void;
  log: (line: string) => void;
}

/** Counters, for logs and tests. */
export interface ReaderStats {
  messages: number;
  parseErrors: number;
  invalidRequests: number;
  oversized: number;
  resyncs: number;
  droppedBytes: number;
}

const HEADER_END = Buffer.from('\r\n\r\n');
const MARKERS = [Buffer.from('Content-Length:'), Buffer.from('content-length:')];
const MARKER_LEN = MARKERS[0].length;
/** Bytes after the marker's start needed to confirm it: name, spaces, up to 16 digits, CR LF. */
const MARKER_CONFIRM = MARKER_LEN + 24;

/** Bytes of an oversized body read to find its request id. */
const OVERSIZE_PEEK = 4096;

/**
 * Where a frame header may begin near the end of a body that is not JSON: a "Content-Length:"
 * that runs to the end of the body unconfirmed, or a suffix that is a prefix of one.
 * body.length when there is none.
 */
export function resumePoint(body: Buffer): number {
  for (const m of MARKERS) {
    let i = body.indexOf(m, 1);
    while (i >= 0) {
      if (confirmed(body, i) || openEnded(body, i)) return i;
      i = body.indexOf(m, i + 1);
    }
  }
  for (let k = Math.min(MARKER_LEN - 1, body.length - 1); k >= 1; k--) {
    const suffix = body.subarray(body.length - k);
    if (MARKERS.some((m) => m.subarray(0, k).equals(suffix))) return body.length - k;
  }
  return body.length;
}

/** "Content-Length:" followed only by spaces, digits and maybe CR up to the end of buf. */
function openEnded(buf: Buffer, at: number): boolean {
  let i = at + MARKER_LEN;
  while (i < buf.length && (buf[i] === 0x20 || (buf[i] >= 0x30 && buf[i] <= 0x39))) i++;
  return i === buf.length || (i === buf.length - 1 && buf[i] === 0x0d);
}

/** Position of the first confirmed frame header `Content-Length: <digits>\r\n` in buf at or after from, or -1. */
export function findFrameStart(buf: Buffer, from = 0): number {
  let best = -1;
  for (const m of MARKERS) {
    let i = buf.indexOf(m, from);
    while (i >= 0) {
      if (best >= 0 && i >= best) break;
      if (confirmed(buf, i)) {
        best = i;
        break;
      }
      i = buf.indexOf(m, i + 1);
    }
  }
  return best;
}

function confirmed(buf: Buffer, at: number): boolean {
  let i = at + MARKER_LEN;
  while (i < buf.length && buf[i] === 0x20) i++;
  const digits = i;
  while (i < buf.length && buf[i] >= 0x30 && buf[i] <= 0x39) i++;
  return i > digits && i - digits <= 16 && buf[i] === 0x0d && buf[i + 1] === 0x0a;
}

type Mode = 'header' | 'body' | 'discard';

export class LimitedMessageReader extends AbstractMessageReader implements MessageReader {
  maxMessageBytes: number;
  readonly stats: ReaderStats = { messages: 0, parseErrors: 0, invalidRequests: 0, oversized: 0, resyncs: 0, droppedBytes: 0 };
  private readonly maxHeaderBytes: number;
  private callback: DataCallback | null = null;
  private mode: Mode = 'header';
  private head: Buffer = Buffer.alloc(0);
  private body: Buffer[] = [];
  private bodyLen = 0;
  private need = 0;
  /** Last bytes of the body so far, to find a frame header split across chunks. */
  private tail: Buffer = Buffer.alloc(0);
  private discardLeft = 0;
  /** The oversized message being discarded, until its error reply is sent. */
  private oversize: { length: number; peek: Buffer } | null = null;
  private disposed = false;

  constructor(
    private readonly readable: NodeJS.ReadableStream,
    private readonly opts: FrameReaderOptions,
  ) {
    super();
    this.maxMessageBytes = opts.maxMessageBytes;
    this.maxHeaderBytes = opts.maxHeaderBytes ?? 8192;
  }

  listen(callback: DataCallback): Disposable {
    this.callback = callback;
    const onData = (chunk: Buffer | string) => {
      try {
        this.onData(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk);
      } catch (e) {
        // Never let a reader bug take the connection down: drop the state and resynchronise.
        this.opts.log(`reader: internal error, resetting: ${(e as Error).stack ?? e}`);
        this.reset();
      }
    };
    const onError = (e: Error) => this.fireError(e);
    const onClose = () => this.fireClose();
    this.readable.on('data', onData);
    this.readable.on('error', onError);
    this.readable.on('end', onClose);
    this.readable.on('close', onClose);
    return {
      dispose: () => {
        this.readable.off('data', onData);
        this.readable.off('error', onError);
        this.readable.off('end', onClose);
        this.readable.off('close', onClose);
      },
    };
  }

  override dispose(): void {
    this.disposed = true;
    super.dispose();
  }

  private reset(): void {
    this.mode = 'header';
    this.head = Buffer.alloc(0);
    this.body = [];
    this.bodyLen = 0;
    this.tail = Buffer.alloc(0);
    this.discardLeft = 0;
  }

  private onData(chunk: Buffer): void {
    let data = chunk;
    while (data.length > 0 && !this.disposed) {
      if (this.mode === 'discard') data = this.discard(data);
      else if (this.mode === 'body') data = this.readBody(data);
      else data = this.readHeader(data);
    }
  }

  /** Discards an oversized body; stops early at a frame header (the Content-Length lied). */
  private discard(data: Buffer): Buffer {
    const take = Math.min(this.discardLeft, data.length);
    if (this.oversize) {
      // Collect the first bytes of the body to find the request's id for the error reply.
      const want = OVERSIZE_PEEK - this.oversize.peek.length;
      if (want > 0) this.oversize.peek = Buffer.concat([this.oversize.peek, data.subarray(0, Math.min(want, take))]);
      if (this.oversize.peek.length >= Math.min(OVERSIZE_PEEK, this.oversize.length)) this.replyOversize();
    }
    const scan = Buffer.concat([this.tail, data]);
    const at = findFrameStart(scan);
    if (at >= 0 && at < this.tail.length + take) {
      this.replyOversize();
      this.stats.resyncs++;
      this.stats.droppedBytes += Math.max(0, at - this.tail.length);
      this.mode = 'header';
      this.tail = Buffer.alloc(0);
      return scan.subarray(at);
    }
    this.discardLeft -= take;
    this.stats.droppedBytes += take;
    this.tail = Buffer.from(data.subarray(Math.max(0, take - MARKER_CONFIRM), take));
    if (this.discardLeft === 0) {
      this.replyOversize();
      this.mode = 'header';
      this.tail = Buffer.alloc(0);
    }
    return data.subarray(take);
  }

  private replyOversize(): void {
    const o = this.oversize;
    if (!o) return;
    this.oversize = null;
    this.replyError(
      peekId(o.peek),
      'MESSAGE_TOO_LARGE',
      `the message is ${o.length} bytes; this engine accepts at most ${this.maxMessageBytes} bytes per message ` +
        `(factlens serve --max-message-bytes)`,
      { field: 'Content-Length', bytes: o.length, limit: this.maxMessageBytes },
    );
  }

  private readBody(data: Buffer): Buffer {
    const take = Math.min(this.need - this.bodyLen, data.length);
    const part = data.subarray(0, take);
    // A frame header inside the body: this frame was cut short (or lied); restart there.
    const scan = this.tail.length ? Buffer.concat([this.tail, part]) : part;
    const at = findFrameStart(scan);
    if (at >= 0) {
      const before = Buffer.concat([...this.body, part]).subarray(0, this.bodyLen + at - this.tail.length);
      this.stats.resyncs++;
      this.badBody(before, 'the message ended before its Content-Length and another message began');
      this.resetBody();
      this.mode = 'header';
      return Buffer.concat([scan.subarray(at), data.subarray(take)]);
    }
    this.body.push(Buffer.from(part));
    this.bodyLen += take;
    this.tail = Buffer.from(scan.subarray(Math.max(0, scan.length - MARKER_CONFIRM)));
    if (this.bodyLen === this.need) {
      const body = Buffer.concat(this.body);
      this.resetBody();
      this.mode = 'header';
      const leftover = this.deliver(body);
      if (leftover.length) return Buffer.concat([leftover, data.subarray(take)]);
    }
    return data.subarray(take);
  }

  private resetBody(): void {
    this.body = [];
    this.bodyLen = 0;
    this.tail = Buffer.alloc(0);
  }

  private readHeader(data: Buffer): Buffer {
    this.head = this.head.length ? Buffer.concat([this.head, data]) : data;
    for (;;) {
      // Leading blank lines between frames are tolerated.
      let start = 0;
      while (start + 1 < this.head.length && this.head[start] === 0x0d && this.head[start + 1] === 0x0a) start += 2;
      if (start > 0) this.head = this.head.subarray(start);
      const end = this.head.indexOf(HEADER_END);
      if (end < 0) {
        if (this.head.length > this.maxHeaderBytes) this.garbage('no end of the header block', 1);
        else {
          // Keep the partial header (copied, so the chunk it came from can be freed).
          this.head = Buffer.from(this.head);
          return Buffer.alloc(0);
        }
        continue;
      }
      const parsed = parseHeaders(this.head.subarray(0, end).toString('latin1'));
      if (typeof parsed === 'string') {
        this.garbage(parsed, end + HEADER_END.length);
        continue;
      }
      const rest = this.head.subarray(end + HEADER_END.length);
      this.head = Buffer.alloc(0);
      const length = parsed.contentLength;
      if (length > this.maxMessageBytes) {
        this.stats.oversized++;
        this.opts.log(`reader: rejected a message of ${length} bytes (limit ${this.maxMessageBytes})`);
        this.oversize = { length, peek: Buffer.alloc(0) };
        this.mode = 'discard';
        this.discardLeft = length;
        this.tail = Buffer.alloc(0);
        return rest;
      }
      if (length === 0) {
        this.badBody(Buffer.alloc(0), 'the message body is empty');
        this.head = Buffer.from(rest);
        if (rest.length === 0) return Buffer.alloc(0);
        continue;
      }
      this.mode = 'body';
      this.need = length;
      this.resetBody();
      return rest;
    }
  }

  /**
   * An unreadable header block: report once, skip to the next frame header, or at least
   * minDrop bytes (keeping a tail that may hold the start of one).
   */
  private garbage(why: string, minDrop: number): void {
    this.stats.resyncs++;
    const at = findFrameStart(this.head, 1);
    const dropped = at >= 0 ? at : Math.min(this.head.length, Math.max(minDrop, this.head.length - MARKER_CONFIRM));
    this.stats.droppedBytes += dropped;
    this.stats.parseErrors++;
    this.replyError(null, 'PARSE_ERROR', `could not read a message header (${why}); skipped ${dropped} bytes`, {
      field: 'header',
    });
    this.head = Buffer.from(this.head.subarray(dropped));
  }

  private badBody(body: Buffer, why: string): void {
    this.stats.parseErrors++;
    this.replyError(peekId(body.subarray(0, 4096)), 'PARSE_ERROR', `could not read the message: ${why}`, { field: 'body' });
  }

  /**
   * Parses and passes on one message. Returns bytes to read again as the start of a frame:
   * when a body is not JSON, its end may be the beginning of the next frame's header (a
   * Content-Length that was a little too long, ending inside the next header).
   */
  private deliver(body: Buffer): Buffer {
    let value: unknown;
    try {
      value = JSON.parse(body.toString('utf8'));
    } catch (e) {
      this.stats.parseErrors++;
      const resume = resumePoint(body);
      this.replyError(peekId(body.subarray(0, Math.min(resume, 4096))), 'PARSE_ERROR', `the message is not valid JSON: ${(e as Error).message}`, {
        field: 'body',
      });
      return body.subarray(resume);
    }
    const checked = checkEnvelope(value);
    if ('error' in checked) {
      this.stats.invalidRequests++;
      if (checked.reply) this.replyError(checked.id, 'INVALID_REQUEST', checked.error, { field: checked.field });
      else this.opts.log(`reader: ignored a message: ${checked.error}`);
      return Buffer.alloc(0);
    }
    this.stats.messages++;
    this.callback?.(checked.message);
    return Buffer.alloc(0);
  }

  private replyError(id: number | string | null, code: ProtocolErrorCode, message: string, data: Record<string, unknown>): void {
    this.opts.reply({ jsonrpc: '2.0', id, error: { code: ERROR_CODES[code], message, data: { code, ...data } } });
  }
}

function parseHeaders(text: string): { contentLength: number } | string {
  let contentLength: number | undefined;
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) return `header line without a name: ${JSON.stringify(line.slice(0, 60))}`;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'content-length') {
      if (!/^\d{1,16}$/.test(value)) return `Content-Length must be a whole number, got ${JSON.stringify(value.slice(0, 40))}`;
      contentLength = Number(value);
    } else if (name === 'content-type') {
      const charset = /charset=([^;\s]+)/i.exec(value)?.[1]?.toLowerCase();
      if (charset && charset !== 'utf-8' && charset !== 'utf8') return `only utf-8 is supported, not charset ${charset}`;
    }
  }
  if (contentLength === undefined) return 'no Content-Length header';
  return { contentLength };
}

/** The "id" of a (possibly cut or invalid) request, read from its first bytes, if it looks like one. */
function peekId(head: Buffer): number | string | null {
  const m = /"id"\s*:\s*(-?\d{1,15}(?![\d.eE])|"((?:[^"\\]|\\.){0,200})")/.exec(head.toString('utf8'));
  if (!m) return null;
  if (m[2] !== undefined) {
    try {
      return JSON.parse(`"${m[2]}"`) as string;
    } catch {
      return null;
    }
  }
  return Number(m[1]);
}

type Envelope =
  | { message: Message }
  | { error: string; field: string; id: number | string | null; reply: boolean };

const validId = (id: unknown): id is number | string =>
  typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id));

/** Checks that a parsed value is one JSON-RPC 2.0 request, notification or response. */
export function checkEnvelope(value: unknown): Envelope {
  if (Array.isArray(value)) {
    return { error: 'batch requests are not supported; send one message per frame', field: 'body', id: null, reply: true };
  }
  if (value === null || typeof value !== 'object') {
    return { error: `a message must be a JSON object, got ${value === null ? 'null' : typeof value}`, field: 'body', id: null, reply: true };
  }
  const m = value as Record<string, unknown>;
  const hasId = Object.hasOwn(m, 'id');
  const id = validId(m.id) ? m.id : null;
  const isCall = Object.hasOwn(m, 'method');
  // Replies to the engine: it sends no requests, so there is nothing to answer or correlate.
  if (!isCall && (Object.hasOwn(m, 'result') || Object.hasOwn(m, 'error'))) {
    return { error: 'a response, but the engine sent no request', field: 'id', id, reply: false };
  }
  const reply = hasId; // Notifications are never answered, even when invalid.
  if (m.jsonrpc !== '2.0') {
    return { error: `"jsonrpc" must be "2.0", got ${JSON.stringify(m.jsonrpc) ?? 'nothing'}`, field: 'jsonrpc', id, reply: true };
  }
  if (typeof m.method !== 'string' || m.method.length === 0) {
    return { error: '"method" must be a non-empty string', field: 'method', id, reply: true };
  }
  if (hasId && !validId(m.id)) {
    return { error: '"id" must be a string or a finite number', field: 'id', id: null, reply: true };
  }
  if (m.params !== undefined && (m.params === null || typeof m.params !== 'object')) {
    return { error: '"params" must be an object or an array', field: 'params', id, reply };
  }
  if (m.method.startsWith('$/')) {
    if (hasId) return { error: `${m.method} is a notification; send it without an id`, field: 'id', id, reply: true };
    if (m.method === '$/cancelRequest') {
      const p = m.params as Record<string, unknown> | undefined;
      if (!p || Array.isArray(p) || !validId(p.id)) {
        return { error: '$/cancelRequest needs params {id: string | number}', field: 'params.id', id: null, reply: false };
      }
    } else {
      return { error: `unknown notification ${m.method}`, field: 'method', id: null, reply: false };
    }
  }
  return { message: value as Message };
}
