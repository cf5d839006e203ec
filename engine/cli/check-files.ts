/**
 * `--check-file FILE` of `factlens edit`: the prompts of `.prompts` and CounterFact `.json` /
 * `.jsonl` files (formats/check-prompts.ts, the extension's reading), checked before and after
 * the edit (engine/specificity/check.ts), as JSON rows or a table.
 */
import { FactLensError, isFactLensError } from '../errors.js';
import { readRegularText } from '../util/files.js';
import type { LoadedModel } from '../model/load.js';
import { checkSpecificity } from '../specificity/check.js';
import type { SpecificityCheckResult } from '../protocol/specificity.js';
import { checkFileKind, checkFilePrompts, type CheckFilePrompt } from '../../formats/check-prompts.js';
import { UsageError } from './args.js';
import { formatProb, showToken } from './commands/predict.js';

export interface CheckFileEntry extends CheckFilePrompt {
  /** The file as given on the command line. */
  file: string;
}

/** The `checks` rows of the edit command's JSON result. */
export interface CheckRow {
  file: string;
  /** 1-based, as editors show it. */
  line: number;
  prompt: string;
  subject: string | null;
  related: boolean;
  before: { token: string; prob: number };
  after: { token: string; prob: number };
  changed: boolean;
}

/** Reads the check files; malformed lines are skipped with a warning naming file and line. */
export function readCheckFiles(files: string[], log: (line: string) => void, command: string): CheckFileEntry[] {
  const out: CheckFileEntry[] = [];
  for (const file of files) {
    const kind = checkFileKind(file);
    if (!kind) throw new UsageError(`--check-file ${file}: expected a .prompts, .json or .jsonl file`, command);
    let text: string;
    try {
      // Only regular files (engine/util/files.ts): a FIFO would hang the command.
      text = readRegularText(file, 'check-file');
    } catch (e) {
      if (isFactLensError(e)) throw new FactLensError(e.code, `check file ${e.message}`, { ...e.data, file, field: 'check-file' });
      throw e;
    }
    const r = checkFilePrompts(text, kind);
    if (!r.recognised) {
      throw new FactLensError('INVALID_ARGUMENT', `check file ${file} has no CounterFact records (requested_rewrite) or facts ({subject, prompt, object})`, {
        file,
        field: 'check-file',
      });
    }
    for (const d of r.diagnostics) log(`warning: ${file}:${d.line + 1}: ${d.message}; not checked`);
    if (!r.prompts.length) throw new FactLensError('INVALID_ARGUMENT', `check file ${file} holds no prompt to check`, { file, field: 'check-file' });
    out.push(...r.prompts.map((p) => ({ ...p, file })));
  }
  return out;
}

export function runChecks(model: LoadedModel, entries: CheckFileEntry[]): { result: SpecificityCheckResult; rows: CheckRow[] } {
  const result = checkSpecificity(model, entries);
  const rows = result.checks.map((c, i): CheckRow => ({
    file: entries[i].file,
    line: entries[i].line + 1,
    prompt: c.prompt,
    subject: c.subject,
    related: c.related,
    before: { token: c.before.token, prob: c.before.prob },
    after: { token: c.after.token, prob: c.after.prob },
    changed: c.changed,
  }));
  return { result, rows };
}

const MARK = { unchanged: ' ', collateral: '!', moved: '+', 'not-reached': '?' } as const;

/** The table printed without --json. */
export function formatChecks(result: SpecificityCheckResult, rows: CheckRow[]): string {
  const head = ['', 'where', 'prompt', 'before', 'after'];
  const body = rows.map((r, i) => [
    MARK[result.checks[i].verdict],
    `${r.file}:${r.line}`,
    showToken(r.prompt),
    `${showToken(r.before.token)} ${formatProb(r.before.prob)}`,
    `${showToken(r.after.token)} ${formatProb(r.after.prob)}`,
  ]);
  const widths = head.map((h, c) => Math.max(h.length, ...body.map((r) => r[c].length)));
  const fmt = (r: string[]) => r.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd();
  const asked = result.total - result.others;
  const moved = result.checks.filter((c) => c.verdict === 'moved').length;
  return [
    `specificity: ${result.unchanged}/${result.others} other prompts unchanged; ${moved}/${asked} prompts of the edited fact moved to the new target`,
    '(! another answer changed, + moved to the new target, ? asks the edited fact but did not move)',
    fmt(head),
    ...body.map(fmt),
  ].join('\n') + '\n';
}
