/**
 * Faulting in the WASM heap's pages for a model's weights on another core while the tokenizer is
 * built. A fresh process touches every page of its weights for the first time when it loads them,
 * and on the machines measured here (virtual machines) a page fault costs microseconds: loading
 * tinyworld's 76 MB of float32 weights took 92–139 ms, of which the decoding itself is ~15 ms.
 *
 * So loadModel first takes a block of heap of the weights' size, has libuv's thread pool read
 * the checkpoint's own bytes into it (any bytes would do: a read makes the kernel fault the pages
 * in, off the main thread; the checkpoint's bytes also warm the page cache the load reads next),
 * builds the tokenizer meanwhile on the main thread, waits for the reads and frees the block.
 * The allocator (dlmalloc; emscripten never returns memory to the system) then places the
 * weights in those pages. Measured on tinyworld: weights 92–139 → 28–31 ms, the tokenizer beside it
 * 10–40 ms slower; load 311–362 → 260–295 ms.
 *
 * While the reads run, nothing may allocate in the WASM heap: a growth would detach the views the
 * reads write into. loadModel builds only the tokenizer (plain JavaScript) in that window and
 * always waits (done()) before touching tensors, also when the tokenizer fails.
 */
import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';

/** Bytes per read request: small enough that the pool's threads share the work. */
const PIECE = 4 << 20;

interface WasmHeap {
  wasm: { HEAPU8: Uint8Array; _malloc(bytes: number): number; _free(ptr: number): void };
}

export interface HeapPrefault {
  /** Waits for the reads and frees the block; never throws (a failed read only faults fewer pages). */
  done(): Promise<void>;
}

/** For tests: how many ran, the last one's block (heap offset, bytes), and how many have not finished. */
export const prefaultStats = { runs: 0, offset: 0, bytes: 0, pending: 0 };

/**
 * Starts faulting in `bytes` of fresh WASM heap with reads of `files`, or returns null where it does
 * not apply (not a WASM backend, a shared heap, no bytes to read, no room in the heap).
 */
export function prefaultHeap(bytes: number, files: string[]): HeapPrefault | null {
  if (tf.getBackend() !== 'wasm' || !(bytes > 0)) return null;
  const wasm = (tf.backend() as unknown as Partial<WasmHeap>).wasm;
  if (!wasm || typeof wasm._malloc !== 'function' || !(wasm.HEAPU8?.buffer instanceof ArrayBuffer)) return null;
  const sources: Array<{ fd: number; size: number }> = [];
  try {
    for (const f of files) {
      const fd = fs.openSync(f, 'r');
      const size = fs.fstatSync(fd).size;
      if (size > 0) sources.push({ fd, size });
      else fs.closeSync(fd);
    }
  } catch {
    // An unreadable file is the loader's to report, with its name; here it only means no prefault.
    for (const s of sources) fs.closeSync(s.fd);
    return null;
  }
  if (sources.length === 0) return null;
  const ptr = wasm._malloc(bytes) >>> 0;
  if (ptr === 0) {
    for (const s of sources) fs.closeSync(s.fd);
    return null;
  }
  const view = new Uint8Array(wasm.HEAPU8.buffer, ptr, bytes);
  const reads: Array<Promise<void>> = [];
  // The block is filled piece by piece from the files in turn, from their start again when they
  // end (a float16 checkpoint is half the size of its float32 weights).
  let src = 0;
  let pos = 0;
  for (let off = 0; off < bytes; ) {
    const { fd, size } = sources[src];
    const len = Math.min(PIECE, bytes - off, size - pos);
    const at = off;
    reads.push(new Promise((resolve) => fs.read(fd, view, at, len, pos, () => resolve())));
    off += len;
    pos += len;
    if (pos >= size) {
      pos = 0;
      src = (src + 1) % sources.length;
    }
  }
  prefaultStats.runs++;
  prefaultStats.offset = ptr;
  prefaultStats.bytes = bytes;
  prefaultStats.pending++;
  let finished: Promise<void> | null = null;
  return {
    done: () =>
      (finished ??= Promise.all(reads).then(() => {
        for (const s of sources) fs.closeSync(s.fd);
        wasm._free(ptr);
        prefaultStats.pending--;
      })),
  };
}
