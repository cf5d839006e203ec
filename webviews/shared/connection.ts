/**
 * The view's end of its channel to the extension host: sends `ready` once the page has
 * loaded, typed requests with a correlated reply (a Promise per request id), and dispatches
 * the host's typed notifications to handlers. Outside VS Code (the component tests) the page
 * provides a stand-in `acquireVsCodeApi` that records what is posted.
 */
import {
  isHostToView,
  type AnyNotification,
  type AnyRequest,
  type NotificationsOf,
  type ParamsOf,
  type RequestsOf,
  type ResultOf,
  type ViewProtocol,
  type ViewToHost,
} from './channel.js';

export interface VsCodeApi<V> {
  postMessage(msg: ViewToHost<V>): void;
  getState(): unknown;
  setState(s: unknown): void;
}

declare function acquireVsCodeApi<V>(): VsCodeApi<V>;

export class HostConnection<V extends ViewProtocol<AnyRequest, AnyNotification>> {
  private readonly api: VsCodeApi<V>;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private readonly handlers = new Map<string, (params: never) => void>();

  constructor(private readonly view: V) {
    this.api = acquireVsCodeApi<V>();
    window.addEventListener('message', (ev: MessageEvent) => this.receive(ev.data));
  }

  /** Tells the host the page is listening (it then sends what it queued). */
  ready(): void {
    this.api.postMessage({ type: 'ready' });
  }

  request<Q extends RequestsOf<V>>(type: Q, params: ParamsOf<Q>): Promise<ResultOf<Q>> {
    const requestId = this.nextId++;
    return new Promise<ResultOf<Q>>((resolve, reject) => {
      this.pending.set(requestId, { resolve: resolve as (v: unknown) => void, reject });
      this.api.postMessage({ ...params, type: type.type, requestId } as ViewToHost<V>);
    });
  }

  on<N extends NotificationsOf<V>>(type: N, handler: (params: ParamsOf<N>) => void): void {
    this.handlers.set(type.type, handler as (params: never) => void);
  }

  get state(): unknown {
    return this.api.getState();
  }

  set state(s: unknown) {
    this.api.setState(s);
  }

  private receive(m: unknown): void {
    if (!isHostToView(this.view, m)) return;
    if ((m as { type: string }).type === 'reply') {
      const r = m as { requestId: number; ok: boolean; result?: unknown; message?: string };
      const p = this.pending.get(r.requestId);
      if (!p) return;
      this.pending.delete(r.requestId);
      if (r.ok) p.resolve(r.result);
      else p.reject(new Error(r.message ?? 'the request failed'));
      return;
    }
    const { type, ...params } = m as { type: string };
    this.handlers.get(type)?.(params as never);
  }
}
