/**
 * `studiopool/client`: a typed client of the REST API (docs/api-client.md). Uses the global `fetch`
 * (Node 18+, browsers). Every failed call throws a StudiopoolError carrying the API's stable code
 * (docs/errors.md), or `UNREACHABLE` when the server could not be reached.
 */
import type { ErrorCode } from '../domain/errors.js'
export { verifyWebhook, SIGNATURE_HEADER, EVENT_ID_HEADER, EVENT_TYPE_HEADER } from '../domain/webhooks.js'
export type { WebhookEvent, WebhookEventType } from '../domain/webhooks.js'

/** The API's codes (docs/errors.md), and the client's own: the server not reached, a session that ended while awaited, a wait that gave up. */
export type StudiopoolErrorCode = ErrorCode | 'UNREACHABLE' | 'SESSION_ENDED' | 'TIMEOUT' | `HTTP_${number}`

export class StudiopoolError extends Error {
  constructor(
    readonly status: number,
    readonly code: StudiopoolErrorCode,
    message: string,
    readonly details?: readonly { path: string; message: string }[],
  ) {
    super(message)
    this.name = 'StudiopoolError'
  }
}

export type InstanceState =
  'queued' | 'provisioning' | 'starting' | 'ready' | 'stopping' | 'terminated' | 'suspended' | 'failed'

export interface Instance {
  readonly instanceId: string
  readonly url: string
  readonly state: InstanceState
  readonly userId: string | null
  readonly template: string
  readonly progress: number
  readonly progressMessage: string
  readonly queuePosition: number | null
  readonly generation: number
  readonly failureReason: string | null
  readonly endReason: string | null
  readonly createdAt: string
  readonly readyAt: string | null
  readonly [more: string]: unknown
}

export interface SessionGrant {
  readonly instanceId: string
  /** The launch link for the user (single use). */
  readonly url: string
  readonly sessionUrl: string
  readonly state: InstanceState
  readonly queuePosition: number | null
  readonly outcome: string
  /** True when the server answered 202: queued or starting, not ready yet. */
  readonly accepted: boolean
}

/** One event of a session's progress stream. */
export type SessionEvent =
  | {
      readonly event: 'progress'
      readonly id: string | null
      readonly data: {
        instanceId: string
        state: InstanceState
        progress: number
        message: string
        queuePosition: number | null
      }
    }
  | { readonly event: 'ready'; readonly id: string | null; readonly data: { instance: Instance } }
  | {
      readonly event: 'ended'
      readonly id: string | null
      readonly data: { instanceId: string; state: InstanceState; reason: string }
    }

export interface WebhookDeliveryView {
  readonly seq: number
  readonly webhook: string
  readonly eventId: string
  readonly event: string
  readonly status: 'pending' | 'delivered' | 'failed'
  readonly attempts: number
  readonly lastStatus: number | null
  readonly lastError: string | null
  readonly createdAt: string
  readonly nextAttemptAt: string | null
  readonly deliveredAt: string | null
}

/**
 * One page of a list (README "Paging"): the rows under the list's own key, `nextCursor` (null on the
 * last page) and `total`, the rows matching the filters.
 */
export type Page<K extends string, T> = { readonly [k in K]: T[] } & {
  readonly nextCursor: string | null
  readonly total: number
}

/** The paging parameters every list takes: `limit` (the page size) and the previous page's `cursor`. */
export interface PageQuery {
  readonly limit?: number
  readonly cursor?: string
}

export interface InstanceQuery extends PageQuery {
  /** Comma-separated states; the live ones when absent. */
  readonly state?: string
  readonly template?: string
  readonly userId?: string
}
export interface HistoryQuery extends PageQuery {
  readonly userId?: string
  readonly template?: string
  readonly instanceId?: string
  readonly from?: string
  readonly to?: string
  readonly reason?: string
}

export interface ClientOptions {
  /** The server, e.g. `https://pool.example.org`, or its `server.publicUrl` with a path (`https://portal.example.org/studiopool`). */
  readonly url: string
  /** An API key (`Authorization: Bearer`). */
  readonly key?: string
  /** Per call (default 30 s); streams are not limited. */
  readonly timeoutMs?: number
  readonly fetch?: typeof fetch
}

type Query = Record<string, string | number | undefined>
const qs = (q: Query = {}) => {
  const p = new URLSearchParams()
  for (const [k, v] of Object.entries(q)) if (v !== undefined) p.set(k, String(v))
  const s = p.toString()
  return s ? `?${s}` : ''
}
const id = (s: string) => encodeURIComponent(s)
/** `path` (from `/`) under the server URL, keeping its path (sub-path hosting): `new URL(path, url)` would drop it. */
const under = (url: string, path: string) => new URL(url.replace(/\/+$/, '') + path)

export class StudiopoolClient {
  readonly #o: ClientOptions
  constructor(options: ClientOptions) {
    this.#o = options
  }

  /** Any operation by method and path; the typed methods below are built on it. */
  async request<T = unknown>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
    const { data } = await this.#send(method, path, body)
    return data as T
  }

  async #send(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; data: unknown; headers: Headers }> {
    const f = this.#o.fetch ?? fetch
    let res: Response
    try {
      res = await f(under(this.#o.url, path), {
        method,
        headers: {
          ...(this.#o.key ? { authorization: `Bearer ${this.#o.key}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          accept: 'application/json',
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.#o.timeoutMs ?? 30_000),
      })
    } catch (err) {
      throw new StudiopoolError(0, 'UNREACHABLE', `cannot reach ${this.#o.url}: ${(err as Error).message}`)
    }
    const text = await res.text()
    const json = (res.headers.get('content-type') ?? '').includes('json') && text
    const data: unknown = json ? JSON.parse(text) : text
    if (res.status >= 400) {
      const e = (data as { error?: { code?: string; message?: string; details?: [] } } | null)?.error
      throw new StudiopoolError(
        res.status,
        (e?.code as StudiopoolErrorCode | undefined) ?? `HTTP_${res.status}`,
        e?.message ?? `HTTP ${res.status}`,
        e?.details,
      )
    }
    return { status: res.status, data, headers: res.headers }
  }

  /** `requestSession`: 200 when ready, 202 (`accepted: true`) while queued or starting. */
  async requestSession(body: { userId: string; template?: string }): Promise<SessionGrant> {
    const { status, data } = await this.#send('POST', '/api/v1/sessions', body)
    return { ...(data as Omit<SessionGrant, 'accepted'>), accepted: status === 202 }
  }
  listSessions(userId: string) {
    return this.request<{ sessions: Instance[] }>('GET', `/api/v1/sessions${qs({ userId })}`)
  }
  getInstance(instanceId: string, q: { userId?: string } = {}) {
    return this.request<{ instance: Instance }>('GET', `/api/v1/instances/${id(instanceId)}${qs(q)}`)
  }
  /** One page of instances; `eachInstance` walks them all. */
  listInstances(q: InstanceQuery = {}) {
    return this.request<Page<'instances', Instance>>('GET', `/api/v1/instances${qs({ ...q })}`)
  }
  /** Every instance the query matches, page after page (following `nextCursor`; `limit` is the page size). */
  eachInstance(q: Omit<InstanceQuery, 'cursor'> = {}): AsyncGenerator<Instance> {
    return this.#each<Instance>('/api/v1/instances', 'instances', { ...q })
  }
  deleteInstance(instanceId: string, q: { userId?: string } = {}) {
    return this.request<{ status: 'OK' }>('DELETE', `/api/v1/instances/${id(instanceId)}${qs(q)}`)
  }
  /**
   * Admin, the verbs (README "Verbs"): `stop` ends the session and terminates the instance (as
   * `deleteInstance`); `suspend` keeps the disk, the owner and the URL; `resume` brings it back;
   * `restart` makes a new generation under the same id.
   */
  instanceAction(instanceId: string, action: 'stop' | 'restart' | 'suspend' | 'resume') {
    return this.request<{ instance: Instance }>('POST', `/api/v1/instances/${id(instanceId)}/${action}`)
  }
  /** `stopInstance`: ends the session and terminates the instance (admin). */
  stopInstance(instanceId: string) {
    return this.instanceAction(instanceId, 'stop')
  }
  /** `suspendInstance`: stops the machine, keeps its disk, owner and URL (admin; where the provider can). */
  suspendInstance(instanceId: string) {
    return this.instanceAction(instanceId, 'suspend')
  }
  resumeInstance(instanceId: string) {
    return this.instanceAction(instanceId, 'resume')
  }
  restartInstance(instanceId: string) {
    return this.instanceAction(instanceId, 'restart')
  }
  listTemplates() {
    return this.request<{ templates: Record<string, unknown>[] }>('GET', '/api/v1/templates')
  }
  getPool() {
    return this.request<Record<string, unknown>>('GET', '/api/v1/pool')
  }
  /** The whole queue, oldest first (GET /api/v1/pool/queue, page by page); positions are per template. */
  eachQueued(q: { template?: string; limit?: number } = {}): AsyncGenerator<QueuedRow> {
    return this.#each<QueuedRow>('/api/v1/pool/queue', 'queue', { ...q })
  }
  /** One page of the history, newest first; `eachAssignment` walks it all. */
  listHistory(q: HistoryQuery = {}) {
    return this.request<Page<'history', Record<string, unknown>>>('GET', `/api/v1/history${qs({ ...q })}`)
  }
  eachAssignment(q: Omit<HistoryQuery, 'cursor'> = {}): AsyncGenerator<Record<string, unknown>> {
    return this.#each<Record<string, unknown>>('/api/v1/history', 'history', { ...q })
  }
  /**
   * The history as CSV, page after page: the first chunk starts with the header line, the others
   * do not, so the chunks written one after the other are one CSV file.
   */
  async *historyCsv(q: Omit<HistoryQuery, 'cursor'> = {}): AsyncGenerator<string> {
    let cursor: string | undefined
    let first = true
    do {
      const res = await this.#send('GET', `/api/v1/history${qs({ ...q, cursor, format: 'csv' })}`)
      const text = String(res.data)
      yield first ? text : text.slice(text.indexOf('\r\n') + 2)
      first = false
      // The next page is in the Link header (a CSV body has no room for nextCursor).
      const next = /<([^>]*)>;\s*rel="next"/.exec(res.headers.get('link') ?? '')?.[1]
      cursor = next ? (new URLSearchParams(next.slice(next.indexOf('?') + 1)).get('cursor') ?? undefined) : undefined
    } while (cursor !== undefined)
  }
  getUsage(q: { from?: string; to?: string; userId?: string } = {}) {
    return this.request<Record<string, unknown>>('GET', `/api/v1/usage${qs(q)}`)
  }
  /** One page of the audit log, newest first; `eachAuditEvent` walks it all. */
  listAudit(q: { instanceId?: string } & PageQuery = {}) {
    return this.request<Page<'events', Record<string, unknown>>>('GET', `/api/v1/audit${qs({ ...q })}`)
  }
  eachAuditEvent(q: { instanceId?: string; limit?: number } = {}): AsyncGenerator<Record<string, unknown>> {
    return this.#each<Record<string, unknown>>('/api/v1/audit', 'events', q)
  }
  listKeys(q: PageQuery = {}) {
    return this.request<Page<'keys', Record<string, unknown>>>('GET', `/api/v1/keys${qs({ ...q })}`)
  }
  eachKey(q: { limit?: number } = {}): AsyncGenerator<Record<string, unknown>> {
    return this.#each<Record<string, unknown>>('/api/v1/keys', 'keys', q)
  }
  createKey(body: { name: string; role: 'requester' | 'proxy' | 'admin' | 'metrics' }) {
    return this.request<{ id: string; name: string; role: string; key: string }>('POST', '/api/v1/keys', body)
  }
  revokeKey(keyId: string) {
    return this.request<{ status: 'OK' }>('DELETE', `/api/v1/keys/${id(keyId)}`)
  }
  listHomes(q: { userId?: string } = {}) {
    return this.request<{ homes: Record<string, unknown>[]; unreachable: string[] }>('GET', `/api/v1/homes${qs(q)}`)
  }
  deleteHome(q: { provider: string; ref: string }) {
    return this.request<{ deleted: true }>('DELETE', `/api/v1/homes${qs(q)}`)
  }
  listWebhookDeliveries(q: { webhook?: string; status?: string } & PageQuery = {}) {
    return this.request<Page<'deliveries', WebhookDeliveryView>>('GET', `/api/v1/webhooks/deliveries${qs({ ...q })}`)
  }
  eachWebhookDelivery(
    q: { webhook?: string; status?: string; limit?: number } = {},
  ): AsyncGenerator<WebhookDeliveryView> {
    return this.#each<WebhookDeliveryView>('/api/v1/webhooks/deliveries', 'deliveries', q)
  }

  /**
   * The pages of any list, from the first (or `query.cursor`) to the last, following `nextCursor`.
   * The walk is stable while rows are added or removed: a row that exists for the whole walk comes
   * exactly once (keyset paging, README "Paging").
   */
  async *pages<T>(path: string, key: string, query: Query = {}): AsyncGenerator<Page<string, T>> {
    let cursor = query.cursor === undefined ? undefined : String(query.cursor)
    do {
      const page = await this.request<Page<string, T>>('GET', `${path}${qs({ ...query, cursor })}`)
      yield page
      cursor = page.nextCursor ?? undefined
    } while (cursor !== undefined)
  }

  async *#each<T>(path: string, key: string, query: Query): AsyncGenerator<T> {
    for await (const page of this.pages<T>(path, key, query)) yield* page[key] ?? []
  }

  /** `streamSessionEvents`: the session's progress, until `ready` or `ended` (the server then closes). */
  async *sessionEvents(
    instanceId: string,
    opts: { userId?: string; lastEventId?: string; signal?: AbortSignal } = {},
  ): AsyncGenerator<SessionEvent> {
    const f = this.#o.fetch ?? fetch
    const url = under(this.#o.url, `/api/v1/instances/${id(instanceId)}/events${qs({ userId: opts.userId })}`)
    let res: Response
    try {
      res = await f(url, {
        headers: {
          accept: 'text/event-stream',
          ...(this.#o.key ? { authorization: `Bearer ${this.#o.key}` } : {}),
          ...(opts.lastEventId ? { 'last-event-id': opts.lastEventId } : {}),
        },
        signal: opts.signal,
      })
    } catch (err) {
      throw new StudiopoolError(0, 'UNREACHABLE', `cannot reach ${this.#o.url}: ${(err as Error).message}`)
    }
    if (res.status >= 400 || !res.body) {
      const e = ((await res.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null)?.error
      throw new StudiopoolError(
        res.status,
        (e?.code as StudiopoolErrorCode) ?? `HTTP_${res.status}`,
        e?.message ?? `HTTP ${res.status}`,
      )
    }
    let buf = ''
    const decoder = new TextDecoder()
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true })
      let end: number
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end)
        buf = buf.slice(end + 2)
        const field = (name: string) =>
          block
            .split('\n')
            .find((l) => l.startsWith(`${name}: `))
            ?.slice(name.length + 2)
        const event = field('event')
        const data = field('data')
        if (event && data) yield { event, id: field('id') ?? null, data: JSON.parse(data) } as SessionEvent
      }
    }
  }

  /** Follows the progress stream until the session is ready (its instance) or throws when it ended. */
  async waitUntilReady(instanceId: string, opts: { userId?: string; signal?: AbortSignal } = {}): Promise<Instance> {
    for await (const ev of this.sessionEvents(instanceId, opts)) {
      if (ev.event === 'ready') return ev.data.instance
      if (ev.event === 'ended') throw new StudiopoolError(0, 'SESSION_ENDED', `the session ended: ${ev.data.reason}`)
    }
    throw new StudiopoolError(0, 'UNREACHABLE', 'the progress stream closed before the session was ready')
  }
}

/** A queued request as GET /api/v1/pool/queue lists it. */
export interface QueuedRow {
  readonly position: number
  readonly instanceId: string
  readonly template: string
  readonly userId: string | null
  readonly since: string
}
