/**
 * The model's job queue. Jobs run one at a time, in order; a job waiting in the queue can be
 * cancelled before it starts, a running one is asked to stop at its next checkpoint
 * (JobControl.cancelled). Two kinds may run beside the one running job:
 *
 *  - `priority` jobs (predict) do not wait behind long jobs: they start at once unless the
 *    running job is `exclusive`, and otherwise go to the front of the queue;
 *  - `exclusive` jobs (model/load, edit/revert, applying a precomputed record, a MEMIT edit,
 *    an evaluation that edits) swap or change the weights, even temporarily, so nothing runs
 *    beside them: a read waits rather than see weights that are about to change back.
 *
 * tfjs on WASM computes synchronously, so "beside" means between the running job's
 * checkpoints; a priority job never overlaps a tensor operation of another job. (Computing an
 * edit only reads the weights, and applying it is synchronous, so predict may run beside it.)
 */
import { FactLensError } from '../errors.js';
import type { JobControl } from '../util/jobs.js';

export interface JobOwner {
  connection: string;
  client: string;
}

export interface JobSpec<R> {
  method: string;
  owner: JobOwner;
  summary: string;
  /** Changes the model: runs alone. */
  exclusive?: boolean;
  /** Jumps the queue (see above). */
  priority?: boolean;
  run: (control: JobControl) => Promise<R> | R;
  /** Called on every progress report and state change (queued → running). */
  onUpdate?: (job: QueuedJob) => void;
}

export interface QueuedJob {
  readonly id: string;
  readonly method: string;
  readonly owner: JobOwner;
  readonly summary: string;
  readonly exclusive: boolean;
  readonly priority: boolean;
  state: 'queued' | 'running';
  fraction: number;
  message: string;
  readonly queuedAt: Date;
  startedAt?: Date;
  readonly control: JobControl;
}

interface Entry extends QueuedJob {
  spec: JobSpec<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export class JobQueue {
  private seq = 0;
  private readonly waiting: Entry[] = [];
  private readonly running = new Set<Entry>();

  constructor(private readonly log: (line: string) => void = () => {}) {}

  /** Queues a job; the promise settles with its result, or rejects with CANCELLED if cancelled. */
  submit<R>(spec: JobSpec<R>): { job: QueuedJob; result: Promise<R> } {
    let resolve!: (v: unknown) => void;
    let reject!: (e: unknown) => void;
    const result = new Promise<R>((res, rej) => {
      resolve = res as (v: unknown) => void;
      reject = rej;
    });
    const entry: Entry = {
      id: `job-${++this.seq}`,
      method: spec.method,
      owner: spec.owner,
      summary: spec.summary,
      exclusive: spec.exclusive ?? false,
      priority: spec.priority ?? false,
      state: 'queued',
      fraction: 0,
      message: 'queued',
      queuedAt: new Date(),
      control: { cancelled: false },
      spec: spec as JobSpec<unknown>,
      resolve,
      reject,
    };
    entry.control.onProgress = (fraction, message) => {
      entry.fraction = fraction;
      entry.message = message;
      spec.onUpdate?.(entry);
    };
    if (entry.priority) {
      // Behind other priority jobs, ahead of everything else.
      const at = this.waiting.findIndex((e) => !e.priority);
      this.waiting.splice(at < 0 ? this.waiting.length : at, 0, entry);
    } else {
      this.waiting.push(entry);
    }
    this.pump();
    if (entry.state === 'queued') {
      const ahead = this.waiting.indexOf(entry) + this.running.size;
      entry.message = `queued behind ${ahead} job${ahead === 1 ? '' : 's'}`;
      spec.onUpdate?.(entry);
    }
    return { job: entry, result };
  }

  /** Cancels a job: removed if still queued, asked to stop if running. Returns false if unknown. */
  cancel(id: string, why = 'cancelled'): boolean {
    const i = this.waiting.findIndex((e) => e.id === id);
    if (i >= 0) {
      const [e] = this.waiting.splice(i, 1);
      e.control.cancelled = true;
      e.reject(new FactLensError('CANCELLED', `${e.method} was ${why} before it started`, { job: e.id }));
      this.pump();
      return true;
    }
    for (const e of this.running) {
      if (e.id === id) {
        e.control.cancelled = true;
        return true;
      }
    }
    return false;
  }

  /** Cancels every job of one connection (it closed or shut down). */
  cancelOwnedBy(connection: string, why: string): number {
    const mine = [...this.waiting, ...this.running].filter((e) => e.owner.connection === connection);
    for (const e of mine) this.cancel(e.id, why);
    return mine.length;
  }

  /** Running jobs first, then the queue in order. */
  list(): QueuedJob[] {
    return [...this.running, ...this.waiting];
  }

  get size(): number {
    return this.running.size + this.waiting.length;
  }

  countOwnedBy(connection: string): number {
    return this.list().filter((e) => e.owner.connection === connection).length;
  }

  private canStart(e: Entry): boolean {
    if (this.running.size === 0) return true;
    if (e.exclusive) return false;
    // Only priority jobs run beside another job, and never beside an exclusive one.
    if (!e.priority) return false;
    for (const r of this.running) if (r.exclusive) return false;
    return true;
  }

  private pump(): void {
    while (this.waiting.length > 0) {
      // The head of the queue, or a priority job anywhere (priority jobs are at the front).
      const next = this.waiting[0];
      if (!this.canStart(next)) return;
      this.waiting.shift();
      this.start(next);
    }
  }

  private start(e: Entry): void {
    e.state = 'running';
    e.startedAt = new Date();
    e.message = 'started';
    this.running.add(e);
    e.spec.onUpdate?.(e);
    const finish = () => {
      this.running.delete(e);
      this.pump();
    };
    // Start on a fresh tick, so a burst of submissions is queued before the first one blocks.
    setImmediate(() => {
      if (e.control.cancelled) {
        finish();
        e.reject(new FactLensError('CANCELLED', `${e.method} was cancelled before it started`, { job: e.id }));
        return;
      }
      let p: Promise<unknown>;
      try {
        p = Promise.resolve(e.spec.run(e.control));
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(
        (v) => {
          finish();
          e.resolve(v);
        },
        (err) => {
          finish();
          if (e.control.cancelled && !(err instanceof FactLensError && err.code === 'CANCELLED')) {
            this.log(`${e.id} (${e.method}) failed after it was cancelled: ${(err as Error)?.message ?? err}`);
          }
          e.reject(err);
        },
      );
    });
  }
}
