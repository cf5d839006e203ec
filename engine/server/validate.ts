/**
 * Checking request parameters before they reach the engine: each method declares a schema
 * built from the combinators below; a value of the wrong type, out of range, or an unknown
 * field becomes INVALID_ARGUMENT naming the field (`data.field`, a dotted path such as
 * `request.layers[2]`).
 */
import { FactLensError } from '../errors.js';

export type Check<T> = (value: unknown, path: string) => T;

function fail(path: string, what: string, value: unknown): never {
  throw new FactLensError('INVALID_ARGUMENT', `${path || 'params'} must be ${what}, got ${describe(value)}`, {
    field: path || 'params',
  });
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return v.length > 40 ? `a string of ${v.length} characters` : JSON.stringify(v);
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return typeof v;
}

const join = (path: string, key: string | number) =>
  typeof key === 'number' ? `${path}[${key}]` : path ? `${path}.${key}` : key;

export const str =
  (o: { min?: number; max?: number } = {}): Check<string> =>
  (v, p) => {
    if (typeof v !== 'string') fail(p, 'a string', v);
    if (o.min !== undefined && v.length < o.min) fail(p, o.min === 1 ? 'a non-empty string' : `at least ${o.min} characters`, v);
    if (o.max !== undefined && v.length > o.max) fail(p, `at most ${o.max} characters`, v);
    return v;
  };

export const int =
  (o: { min?: number; max?: number } = {}): Check<number> =>
  (v, p) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(p, 'a whole number', v);
    if (o.min !== undefined && v < o.min) fail(p, `a whole number ≥ ${o.min}`, v);
    if (o.max !== undefined && v > o.max) fail(p, `a whole number ≤ ${o.max}`, v);
    return v;
  };

export const num =
  (o: { min?: number; max?: number } = {}): Check<number> =>
  (v, p) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(p, 'a finite number', v);
    if (o.min !== undefined && v < o.min) fail(p, `a number ≥ ${o.min}`, v);
    if (o.max !== undefined && v > o.max) fail(p, `a number ≤ ${o.max}`, v);
    return v;
  };

export const bool = (): Check<boolean> => (v, p) => (typeof v === 'boolean' ? v : fail(p, 'true or false', v));

export const oneOf =
  <T extends string | number>(...values: T[]): Check<T> =>
  (v, p) =>
    (values as unknown[]).includes(v) ? (v as T) : fail(p, `one of ${values.map((x) => JSON.stringify(x)).join(', ')}`, v);

export const arr =
  <T>(item: Check<T>, o: { min?: number; max?: number } = {}): Check<T[]> =>
  (v, p) => {
    if (!Array.isArray(v)) fail(p, 'an array', v);
    if (o.min !== undefined && v.length < o.min) fail(p, `an array of at least ${o.min}`, v);
    if (o.max !== undefined && v.length > o.max) fail(p, `an array of at most ${o.max}`, v);
    return v.map((x, i) => item(x, join(p, i)));
  };

export const tuple =
  <A, B>(a: Check<A>, b: Check<B>): Check<[A, B]> =>
  (v, p) => {
    if (!Array.isArray(v) || v.length !== 2) fail(p, 'an array of 2', v);
    return [a(v[0], join(p, 0)), b(v[1], join(p, 1))];
  };

/** The first alternative that accepts the value; the error of the last one otherwise. */
export const either =
  <A, B>(a: Check<A>, b: Check<B>): Check<A | B> =>
  (v, p) => {
    try {
      return a(v, p);
    } catch {
      return b(v, p);
    }
  };

export type Optional<T> = Check<T> & { optional: true };
export const opt = <T>(c: Check<T>): Optional<T | undefined> => {
  const f = ((v: unknown, p: string) => (v === undefined ? undefined : c(v, p))) as Optional<T | undefined>;
  f.optional = true;
  return f;
};

type Shape = Record<string, Check<unknown>>;
type Out<S extends Shape> = { [K in keyof S]: S[K] extends Check<infer T> ? T : never };

/** An object with exactly these fields (optional ones may be absent); unknown fields are errors. */
export const obj =
  <S extends Shape>(shape: S, o: { allowExtra?: boolean } = {}): Check<Out<S>> =>
  (v, p) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(p, 'an object', v);
    const src = v as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const [k, check] of Object.entries(shape)) {
      const present = Object.hasOwn(src, k);
      if (!present && !(check as Partial<Optional<unknown>>).optional) {
        throw new FactLensError('INVALID_ARGUMENT', `${join(p, k)} is missing`, { field: join(p, k) });
      }
      const value = check(present ? src[k] : undefined, join(p, k));
      if (value !== undefined) out[k] = value;
    }
    if (!o.allowExtra) {
      for (const k of Object.keys(src)) {
        if (!Object.hasOwn(shape, k)) {
          const known = Object.keys(shape);
          throw new FactLensError(
            'INVALID_ARGUMENT',
            `unknown field ${join(p, k)}${known.length ? `; known fields: ${known.join(', ')}` : '; this method takes no parameters'}`,
            { field: join(p, k) },
          );
        }
      }
    }
    return out as Out<S>;
  };

/**
 * The schema of a protocol type P: one check per field of P, exactly. A field renamed or
 * retyped in the protocol, a field missing here or one the protocol lacks, is a compile error;
 * optional fields of P need opt(...) and required ones must not have it.
 */
export type SchemaOf<P> = {
  [K in keyof P]-?: {} extends Pick<P, K> ? Optional<Exclude<P[K], undefined> | undefined> : Check<P[K]>;
};

/** obj() typed against a protocol type: the check returns exactly P. */
export const objOf = <P extends object>(shape: SchemaOf<P>, o: { allowExtra?: boolean } = {}): Check<P> =>
  obj(shape as unknown as Shape, o) as unknown as Check<P>;

/** A free-form JSON object (counted, not inspected). */
export const record =
  (o: { maxKeys?: number } = {}): Check<Record<string, number | string>> =>
  (v, p) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(p, 'an object', v);
    const entries = Object.entries(v as object);
    if (o.maxKeys !== undefined && entries.length > o.maxKeys) fail(p, `an object of at most ${o.maxKeys} fields`, v);
    for (const [k, x] of entries) {
      if (typeof x !== 'number' && typeof x !== 'string' && x !== null) fail(join(p, k), 'a number or a string', x);
    }
    return v as Record<string, number | string>;
  };

/** Params that may be omitted or given as {} / []: methods without parameters. */
export const none = (): Check<Record<string, never>> => (v, p) => {
  if (v === undefined || v === null) return {};
  if (Array.isArray(v) && v.length === 0) return {};
  return obj({})(v, p) as Record<string, never>;
};
