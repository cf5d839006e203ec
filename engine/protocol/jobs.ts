/** Jobs: progress, cancellation and the job list (every long request runs as a queued job). */
import { NotificationType, RequestType } from 'vscode-jsonrpc';
import type { EngineErrorData } from './errors.js';

/** Requests that run as jobs accept a client-chosen token; `$/progress` then carries it. */
export interface WithProgress {
  progressToken?: string;
}

export type JobState = 'queued' | 'running';

export interface JobInfo {
  id: string;
  method: string;
  state: JobState;
  /** 0 for running jobs, 1.. for the place in the queue. */
  position: number;
  owner: {
    /** Connection id (stable for the life of a connection). */
    connection: string;
    /** clientName from that connection's initialize. */
    client: string;
  };
  /** True when the job belongs to the asking connection. */
  mine: boolean;
  /** A short description, e.g. the prompt. */
  summary: string;
  fraction: number;
  message: string;
  queuedAt: string;
  startedAt?: string;
}

export type JobsListParams = Record<string, never>;
export interface JobsListResult {
  jobs: JobInfo[];
}
export const JobsList = new RequestType<JobsListParams, JobsListResult, EngineErrorData>('jobs/list');

/** Progress of a job started with a progressToken; sent only to the job's own connection. */
export interface ProgressParams {
  /** The progressToken of the request. */
  token: string;
  jobId: string;
  method: string;
  /** 0..1 */
  fraction: number;
  message: string;
  state: JobState;
}
export const Progress = new NotificationType<ProgressParams>('$/progress');

/** Sent by vscode-jsonrpc when a request's CancellationToken fires. Long jobs stop at their next checkpoint. */
export interface CancelParams {
  id: number | string;
}
export const CancelRequest = new NotificationType<CancelParams>('$/cancelRequest');
