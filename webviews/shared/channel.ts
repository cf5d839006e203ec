/**
 * Typed messages between the extension host and a webview (postMessage), shared by both
 * sides: each view declares its requests (view → host, answered by exactly one reply) and
 * notifications (host → view) as typed constants in its own protocol file
 * (webviews/<view>/protocol.ts); the host (extension/webviewHost.ts) and the view
 * (webviews/shared/connection.ts) take handlers and params typed by those constants, and the
 * guards below check what arrives (anything can arrive on a message port).
 *
 * On the wire a request is `{type, requestId, ...params}`, a notification `{type, ...params}`,
 * a reply `{type: 'reply', requestId, ok, result?, message?}`, and the view's handshake
 * `{type: 'ready'}` (sent whenever its page loads: first show, re-show after hiding, reload).
 *
 * Pure types and functions: no DOM, no Node, no vscode.
 */

/** A view → host request: params P, answered with R. */
export interface RequestType<T extends string, P extends object, R> {
  readonly kind: 'request';
  readonly type: T;
  /** Phantom fields carrying the types (never set). */
  readonly __params?: P;
  readonly __result?: R;
}

/** A host → view notification with params P. `transient`: dropped while the view is hidden or loading (e.g. progress). */
export interface NotificationType<T extends string, P extends object> {
  readonly kind: 'notification';
  readonly type: T;
  readonly transient: boolean;
  readonly __params?: P;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- constraint of any request constant
export type AnyRequest = RequestType<string, any, unknown>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- constraint of any notification constant
export type AnyNotification = NotificationType<string, any>;

/** `request<Params, Result>()('name')`: the two type arguments first, the literal name inferred. */
export const request =
  <P extends object, R = void>() =>
  <T extends string>(type: T): RequestType<T, P, R> => ({ kind: 'request', type });

export const notification =
  <P extends object>(o: { transient?: boolean } = {}) =>
  <T extends string>(type: T): NotificationType<T, P> => ({ kind: 'notification', type, transient: o.transient ?? false });

export type ParamsOf<X> = X extends RequestType<string, infer P, unknown> ? P : X extends NotificationType<string, infer P> ? P : never;
export type ResultOf<X> = X extends RequestType<string, object, infer R> ? R : never;

/** A request on the wire. */
export type RequestMessage<Q> = Q extends RequestType<infer T, infer P, unknown> ? { type: T; requestId: number } & P : never;
/** A notification on the wire. */
export type NotificationMessage<N> = N extends NotificationType<infer T, infer P> ? { type: T } & P : never;

export interface ReplyMessage {
  type: 'reply';
  requestId: number;
  ok: boolean;
  /** The handler's result (ok). */
  result?: unknown;
  /** The error (not ok). */
  message?: string;
}

export interface ReadyMessage {
  type: 'ready';
}

/** One view's protocol: its webview type, bundle, and every message it exchanges. */
export interface ViewProtocol<Q extends AnyRequest, N extends AnyNotification> {
  /** The VS Code webview type (panel serializer, activation event). */
  readonly viewType: string;
  /** The bundle under dist/webviews/. */
  readonly script: string;
  readonly requests: readonly Q[];
  readonly notifications: readonly N[];
}

export type RequestsOf<V> = V extends ViewProtocol<infer Q, AnyNotification> ? Q : never;
export type NotificationsOf<V> = V extends ViewProtocol<AnyRequest, infer N> ? N : never;

export type HostToView<V> = NotificationMessage<NotificationsOf<V>> | ReplyMessage;
export type ViewToHost<V> = RequestMessage<RequestsOf<V>> | ReadyMessage;

export function defineView<Q extends AnyRequest, N extends AnyNotification>(v: ViewProtocol<Q, N>): ViewProtocol<Q, N> {
  return v;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A message the view may receive: a notification of this view, or a reply. */
export function isHostToView<V extends ViewProtocol<AnyRequest, AnyNotification>>(view: V, m: unknown): m is HostToView<V> {
  if (!isObject(m) || typeof m.type !== 'string') return false;
  if (m.type === 'reply') return typeof m.requestId === 'number' && typeof m.ok === 'boolean';
  return view.notifications.some((n) => n.type === m.type);
}

/** A message the host may receive: `ready`, or a request of this view with a numeric id. */
export function isViewToHost<V extends ViewProtocol<AnyRequest, AnyNotification>>(view: V, m: unknown): m is ViewToHost<V> {
  if (!isObject(m) || typeof m.type !== 'string') return false;
  if (m.type === 'ready') return true;
  return typeof m.requestId === 'number' && view.requests.some((q) => q.type === m.type);
}

/** Whether a message is this request (narrows it to that request's params). */
export function isRequest<Q extends AnyRequest>(q: Q, m: { type: string }): m is RequestMessage<Q> {
  return m.type === q.type;
}

/** Whether a message is this notification. */
export function isNotification<N extends AnyNotification>(n: N, m: { type: string }): m is NotificationMessage<N> {
  return m.type === n.type;
}
