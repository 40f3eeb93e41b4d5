import type { InstanceState } from './instance.js'

/**
 * What the gateway needs to know about one instance. The pool (in-process) or the API's
 * change stream (split mode) keeps the gateway's in-memory table of these current.
 */
export interface RouteEntry {
  readonly instanceId: string
  readonly ownerId: string | null
  readonly template: string
  readonly state: InstanceState
  /** Base URL of the app (`http://127.0.0.1:41234`); null while not running. */
  readonly address: string | null
  readonly pathMode: 'strip' | 'keep'
  readonly hostHeader: 'target' | 'preserve'
  readonly progress: number
  readonly progressMessage: string
  /** 1-based, while queued. */
  readonly queuePosition: number | null
  /** Bumped when the instance is replaced under the same id; the gateway drops connections to an old generation. */
  readonly generation: number
  readonly failureReason: string | null
  /**
   * Regular expressions (sources) for request paths, relative to the session root (`/events/get_events`),
   * that do not count as user activity: the app's own keep-alive polling (architecture.md contract 3).
   */
  readonly activityIgnore?: readonly string[]
  /**
   * The requester (API key name) that created the session, part of its identity (issue 8): a cookie
   * from one requester's launch link opens only that requester's sessions. Absent = null.
   */
  readonly requester?: string | null
  /** The template opted in to the warning banner (`injectWidget: true`): the gateway injects it into HTML pages. */
  readonly injectWidget?: boolean
  /** The template's `upstreamHeaders` (values still holding their `{{…}}` tokens; never the secrets). */
  readonly upstreamHeaders?: Readonly<Record<string, string>>
  /**
   * An instance of a `mode: shared` template (issue 14): it has no owner and serves any authorised
   * user at `/a/<template>/`; `draining` = no new users (those on it stay until they leave).
   */
  readonly shared?: { readonly draining: boolean }
}

export type RouteEvent =
  | { readonly type: 'upsert'; readonly route: RouteEntry }
  | { readonly type: 'remove'; readonly instanceId: string; readonly reason: string }
  /** Full state: replace the whole table (first message, and after a reconnect). */
  | { readonly type: 'reset'; readonly routes: readonly RouteEntry[] }

/** Where routes come from: the pool in-process, or the API over a stream in split mode. */
export interface RouteSource {
  /** Calls listener with a `reset` first, then changes. Returns an unsubscribe function. */
  subscribe(listener: (event: RouteEvent) => void): () => void
}

/** Where the gateway sends activity (batched): the store in-process, the API in split mode. */
export interface ActivitySink {
  recordActivity(entries: readonly { readonly id: string; readonly at: number }[]): Promise<void>
}

/** Single-use record for launch tokens: true the first time a nonce is seen. */
export interface NonceLedger {
  consumeOnce(nonce: string, expiresAt: number): Promise<boolean>
}

/** What the gateway knows of a `mode: shared` template (issue 14), from the configuration. */
export interface SharedTemplateRoute {
  readonly name: string
  readonly displayName: string
  readonly routing: 'sticky' | 'per-request'
  readonly maxConnectionsPerInstance: number
  readonly loadFactor: number
  readonly queueSize: number
  readonly queueTimeoutMs: number
  /** Empty = every signed-in user. */
  readonly allowedGroups: readonly string[]
}
