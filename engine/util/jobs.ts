/**
 * Progress and cancellation for long jobs (traces, edits, statistics, evaluation). The CLI
 * prints progress to stderr; the engine process turns it into $/progress notifications and
 * flips `cancelled` on $/cancelRequest. Jobs call `checkpoint()` between units of work, which
 * also yields to the event loop so a cancellation message can arrive.
 */
import { FactLensError } from '../errors.js';

export interface JobControl {
  /** Set to true to ask the job to stop at its next checkpoint. */
  cancelled?: boolean;
  onProgress?: (fraction: number, message: string) => void;
}

export class Job {
  private lastReport = 0;
  private lastPhase: string | null = null;
  constructor(private readonly control: JobControl = {}, private readonly what = 'job') {}

  /**
   * Reports progress (rate-limited to ~10/s, except that a new phase — the message's text
   * before its first ':' — is always shown, so a short last phase is not swallowed by the
   * limit) and throws CANCELLED when asked to stop.
   */
  async checkpoint(fraction: number, message: string): Promise<void> {
    const now = Date.now();
    const colon = message.indexOf(':');
    const phase = colon >= 0 ? message.slice(0, colon) : message;
    if (this.control.onProgress && (now - this.lastReport > 100 || fraction >= 1 || phase !== this.lastPhase)) {
      this.lastReport = now;
      this.lastPhase = phase;
      this.control.onProgress(Math.max(0, Math.min(1, fraction)), message);
    }
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.throwIfCancelled();
  }

  throwIfCancelled(): void {
    if (this.control.cancelled) {
      throw new FactLensError('CANCELLED', `${this.what} was cancelled`);
    }
  }
}

/**
 * A JobControl for one phase of a job: its progress maps into [lo, hi] of the parent's (with
 * an optional message prefix), and it shares the parent's cancellation flag.
 */
export function subControl(control: JobControl, lo: number, hi: number, prefix?: string): JobControl {
  return {
    get cancelled() {
      return control.cancelled;
    },
    onProgress: control.onProgress
      ? (f, msg) => control.onProgress!(lo + (hi - lo) * f, prefix ? `${prefix}: ${msg}` : msg)
      : undefined,
  };
}
