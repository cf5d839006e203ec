/**
 * A minimal writer for ONNX ModelProto bytes (onnx.proto3, the fields a small graph needs):
 * the native kernels are one- to five-node graphs built at run time, so a protobuf
 * library and the generated ONNX schema (onnx-proto + protobufjs + long) would be the larger
 * part of this dependency for about sixty lines of encoding.
 */

/**
 * An int64 Slice end meaning "to the end of the axis": ONNX clamps ends past the dimension, and
 * this is the largest integer a JS number holds exactly (the writer encodes it as int64).
 */
export const SLICE_TO_END = Number.MAX_SAFE_INTEGER;

/** ONNX TensorProto.DataType values used here. */
export const ELEM = { float32: 1, int32: 6, int64: 7, float16: 10 } as const;
export type ElemType = keyof typeof ELEM;

class Writer {
  /**
   * Bytes since the last chunk; chunks are written bytes, nested messages' chunks and raw tensor
   * data as they are, so a weight initializer is copied once, into the final buffer.
   */
  private parts: number[] = [];
  private chunks: Uint8Array[] = [];
  private size = 0;
  /** Moves the pending bytes into a chunk; `size` counts the bytes in chunks. */
  private flush(): void {
    if (!this.parts.length) return;
    this.chunks.push(Uint8Array.from(this.parts));
    this.size += this.parts.length;
    this.parts = [];
  }
  varint(v: number | bigint): this {
    if (typeof v === 'number' && v >= 0 && v < 2 ** 31) {
      let x = v;
      while (x >= 0x80) {
        this.parts.push((x & 0x7f) | 0x80);
        x >>>= 7;
      }
      this.parts.push(x);
      return this;
    }
    // Negative int64 values (the -1 of a shape) take ten bytes, two's complement.
    let x = BigInt.asUintN(64, BigInt(v));
    do {
      let byte = Number(x & 0x7fn);
      x >>= 7n;
      if (x) byte |= 0x80;
      this.parts.push(byte);
    } while (x);
    return this;
  }
  tag(field: number, wire: number): this {
    return this.varint((field << 3) | wire);
  }
  int(field: number, v: number): this {
    return this.tag(field, 0).varint(v);
  }
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, 2).varint(b.length);
    this.flush();
    this.chunks.push(b);
    this.size += b.length;
    return this;
  }
  str(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  msg(field: number, w: Writer): this {
    w.flush();
    this.tag(field, 2).varint(w.size);
    this.flush();
    for (const c of w.chunks) this.chunks.push(c);
    this.size += w.size;
    return this;
  }
  float(field: number, v: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(new Float32Array([v]).buffer);
    for (const x of b) this.parts.push(x);
    return this;
  }
  done(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.size);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

export type Attr = number | number[] | { float: number };
export interface GraphNode {
  op: string;
  inputs: string[];
  outputs: string[];
  domain?: string;
  attrs?: Record<string, Attr>;
}
/** A graph input/output: its element type and shape (a string is a symbolic dimension). */
export interface ValueInfo {
  name: string;
  type: ElemType;
  shape: Array<number | string>;
}

function attribute(name: string, a: Attr): Writer {
  const w = new Writer().str(1, name);
  if (typeof a === 'number') return w.int(3, a).int(20, 2);
  if (Array.isArray(a)) {
    for (const v of a) w.int(8, v);
    return w.int(20, 7);
  }
  return w.float(2, a.float).int(20, 1);
}

function valueInfo(v: ValueInfo): Writer {
  const shape = new Writer();
  for (const d of v.shape) shape.msg(1, typeof d === 'number' ? new Writer().int(1, d) : new Writer().str(2, d));
  const tensor = new Writer().int(1, ELEM[v.type]).msg(2, shape);
  return new Writer().str(1, v.name).msg(2, new Writer().msg(1, tensor));
}

/** A constant of the graph (shapes, split sizes, scalars). */
export interface Initializer {
  name: string;
  type: 'int64' | 'float32';
  dims: number[];
  values: number[] | Float32Array;
}

function initializer(t: Initializer): Writer {
  const w = new Writer();
  for (const d of t.dims) w.int(1, d);
  w.int(2, ELEM[t.type]).str(8, t.name);
  // raw_data: little-endian values, as TensorProto specifies for every type.
  const raw = t.type === 'int64' ? BigInt64Array.from(t.values as number[], (v) => BigInt(v)) : t.values instanceof Float32Array ? t.values : Float32Array.from(t.values);
  return w.bytes(9, new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength));
}

/** Serialises a graph of the default domain (opset 17) and com.microsoft (contrib ops, v1). */
export function onnxModel(nodes: GraphNode[], inputs: ValueInfo[], outputs: ValueInfo[], initializers: Initializer[] = []): Uint8Array {
  const g = new Writer();
  nodes.forEach((n, i) => {
    const w = new Writer();
    for (const x of n.inputs) w.str(1, x);
    for (const x of n.outputs) w.str(2, x);
    w.str(3, `n${i}`).str(4, n.op);
    for (const [k, a] of Object.entries(n.attrs ?? {})) w.msg(5, attribute(k, a));
    if (n.domain) w.str(7, n.domain);
    g.msg(1, w);
  });
  g.str(2, 'factlens');
  for (const t of initializers) g.msg(5, initializer(t));
  for (const v of inputs) g.msg(11, valueInfo(v));
  for (const v of outputs) g.msg(12, valueInfo(v));
  return new Writer()
    .int(1, 8)
    .str(2, 'fact-lens')
    .msg(7, g)
    .msg(8, new Writer().str(1, '').int(2, 17))
    .msg(8, new Writer().str(1, 'com.microsoft').int(2, 1))
    .done();
}
