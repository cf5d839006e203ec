/**
 * Reading user-named files without ever blocking: only regular files are opened. A FIFO
 * named `model.safetensors` (or config.json, a corpus, a dataset) would block open() or
 * read() until a writer appears, freezing the CLI and the engine's request loop with it; a
 * device such as /dev/zero never ends. The file is opened with O_NONBLOCK (which returns at
 * once even for a FIFO) and checked with fstat on the open descriptor, so it cannot be swapped
 * between the check and the read.
 */
import * as fs from 'node:fs';
import { FactLensError } from '../errors.js';

const NONBLOCK = fs.constants.O_NONBLOCK ?? 0;

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/** Opens a regular file for reading; FILE_MISSING naming it when absent or not a regular file. */
export function openRegular(file: string, field?: string): number {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not readable' : `cannot be opened (${code ?? (e as Error).message})`;
    throw new FactLensError('FILE_MISSING', `${file} ${why}`, { file, ...(field ? { field } : {}) });
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new FactLensError('FILE_MISSING', `${file} is ${kindOf(st)}, not a regular file; only regular files are read`, {
      file,
      ...(field ? { field } : {}),
    });
  }
  return fd;
}

/** The bytes of a regular file (see openRegular). */
export function readRegularFile(file: string, field?: string): Buffer {
  const fd = openRegular(file, field);
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The text (UTF-8) of a regular file. */
export function readRegularText(file: string, field?: string): string {
  return readRegularFile(file, field).toString('utf8');
}

/**
 * A JSON.parse error message without the input it quotes. V8 writes the start of the text into
 * the message (`Unexpected token 'r', "root:x:0:0:"... is not valid JSON`); on a socket engine
 * that would hand a client the first bytes of any file it names. Positions stay.
 */
export function jsonErrorMessage(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg
    .replace(/,\s*"(?:[^"\\]|\\.)*"(?:\.\.\.)?\s*is not valid JSON\s*$/s, ' (not valid JSON)')
    .replace(/Unexpected token '?.'?,?/u, 'Unexpected character')
    .replace(/"(?:[^"\\]|\\.)*"/g, '…');
}
