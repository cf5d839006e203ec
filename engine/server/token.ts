/**
 * The secret of a socket engine (`serve --listen`), as Jupyter does it: a socket always needs
 * one. It comes from FACTLENS_TOKEN or a file (`--token-file`), never the command line, which
 * every user of the machine can read (`ps`). Without one the engine generates 256 random bits
 * and writes them to a file only its user can read (0600), whose path it logs; the token itself
 * is printed only to an interactive terminal. A given token must be at least 32 characters
 * (128 bits as hex): short ones can be guessed.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../cli/args.js';
import { cacheRoot } from '../edit/hash.js';

export const MIN_TOKEN_LENGTH = 32;

export interface TokenSource {
  token: string;
  /** Where it came from, for the log (never the token itself). */
  source: string;
  /** A generated token's file, removed when the engine stops. */
  generatedFile?: string;
}

const usage = (msg: string) => new UsageError(msg, 'serve');

function checkLength(token: string, where: string): string {
  if (token.length < MIN_TOKEN_LENGTH) {
    throw usage(
      `the token from ${where} is ${token.length} characters; a token needs at least ${MIN_TOKEN_LENGTH} ` +
        `(e.g. \`openssl rand -hex 16\`), or give none and the engine generates one`,
    );
  }
  return token;
}

/** Reads a token file: a regular file, not readable by group or others. */
function readTokenFile(file: string): string {
  const st = fs.lstatSync(file);
  if (!st.isFile()) throw usage(`--token-file ${file} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw usage(`--token-file ${file} can be read by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
  }
  return checkLength(fs.readFileSync(file, 'utf8').trim(), `--token-file ${file}`);
}

/** Creates `file` (which must not exist) holding a fresh token, readable by its owner only. */
function writeNewToken(file: string): string {
  const token = crypto.randomBytes(32).toString('base64url');
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    fs.writeSync(fd, `${token}\n`);
  } finally {
    fs.closeSync(fd);
  }
  return token;
}

/**
 * The token of a socket engine: FACTLENS_TOKEN, else --token-file (read, or created with a new
 * token when absent), else a generated one in `<cache>/run/engine-<pid>.token`.
 */
export function socketToken(tokenFile: string | undefined, env: NodeJS.ProcessEnv): TokenSource {
  const fromEnv = env.FACTLENS_TOKEN;
  if (fromEnv !== undefined && fromEnv !== '') {
    if (tokenFile) throw usage('give the token either in FACTLENS_TOKEN or with --token-file, not both');
    return { token: checkLength(fromEnv, 'FACTLENS_TOKEN'), source: 'FACTLENS_TOKEN' };
  }
  if (tokenFile) {
    const file = path.resolve(tokenFile);
    if (fs.existsSync(file)) return { token: readTokenFile(file), source: file };
    return { token: writeNewToken(file), source: file, generatedFile: undefined };
  }
  const file = path.join(cacheRoot(env), 'run', `engine-${process.pid}.token`);
  fs.rmSync(file, { force: true });
  return { token: writeNewToken(file), source: file, generatedFile: file };
}
