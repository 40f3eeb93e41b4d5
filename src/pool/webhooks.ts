import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { RouteEntry, RouteEvent, RouteSource } from '../domain/routes.js'
import {
  EVENT_ID_HEADER,
  EVENT_TYPE_HEADER,
  retryDelayMs,
  SIGNATURE_HEADER,
  signWebhook,
  type WebhookDelivery,
  type WebhookEvent,
  type WebhookEventType,
} from '../domain/webhooks.js'
import type { Store } from '../store/store.js'
import { hookEnv, KILL_GRACE_MS, runHook, type HookConfig } from './hooks.js'

export interface WebhookTarget {
  readonly name: string
  readonly url: string
  readonly secret: string
  readonly events: readonly string[]
  readonly maxAttempts: number
  readonly retryBaseMs: number
  readonly retryMaxMs: number
  readonly timeoutMs: number
}

export interface WebhookOptions {
  readonly store: Store
  readonly targets: readonly WebhookTarget[]
  readonly log: Logger
  /** How often the due deliveries are looked for (default 500 ms). */
  readonly pollMs?: number
  readonly now?: () => number
  /** Operator hooks (docs/hooks.md): queued like webhooks as `hook:<name>`, run as commands. */
  readonly hooks?: readonly HookConfig[]
  /** Where a hook run's outcome goes (the pool's audit: a row and a lifecycle log line). */
  readonly audit?: (
    instanceId: string | null,
    event: string,
    actor: string,
    detail: Record<string, unknown>,
  ) => Promise<void>
  /** The public session URL of an instance (STUDIOPOOL_SESSION_URL). */
  readonly sessionUrl?: (instanceId: string) => string
  /** The server's environment, of which a hook inherits PATH, HOME, LANG… only. */
  readonly env?: NodeJS.ProcessEnv
}

/** A hook's queue name in the store; webhook names cannot hold a colon, so the two never meet. */
const hookQueue = (name: string) => `hook:${name}`

/** What other parts call to announce an event, e.g. `events.emit({type: 'budget.warning', data})`. */
export interface EventSink {
  /** Queues the event for every webhook that subscribes to its type. `id` makes it idempotent (default: random). */
  emit(event: SinkEvent, hookData?: Record<string, unknown>): Promise<void>
}

type SinkEvent = { type: WebhookEventType; data: Record<string, unknown>; id?: string }

const CLAIM_LEASE_MS = 60_000

/**
 * Signed webhooks (docs/webhooks.md): events are queued in the store (one row per event and
 * webhook, so they survive restarts), then POSTed in order per webhook by whichever replica claims
 * the head row; a failure (non-2xx, timeout, refused) is retried with exponential backoff, and after
 * `maxAttempts` the delivery is marked failed and the next event goes out.
 */
export class WebhookDispatcher implements EventSink {
  readonly #o: WebhookOptions
  readonly #now: () => number
  #timer: NodeJS.Timeout | null = null
  readonly #loops = new Map<string, Promise<void>>()
  readonly #abort = new AbortController()
  readonly #hooks: readonly HookConfig[]
  #stopped = false
  readonly #seen = new Set<string>()

  constructor(o: WebhookOptions) {
    this.#o = o
    this.#now = o.now ?? Date.now
    this.#hooks = o.hooks ?? []
  }

  async emit(event: SinkEvent, hookData: Record<string, unknown> = {}): Promise<void> {
    const targets = this.#o.targets.filter((t) => t.events.includes(event.type)).map((t) => t.name)
    const data = { ...event.data, ...hookData }
    const template = typeof data['template'] === 'string' ? data['template'] : null
    const hooks = this.#hooks
      .filter(
        (h) =>
          (h.on as readonly string[]).includes(event.type) &&
          (!h.templates.length || !template || h.templates.includes(template)),
      )
      .map((h) => hookQueue(h.name))
    if (targets.length === 0 && hooks.length === 0) return
    const now = this.#now()
    const full: WebhookEvent = {
      id: event.id ?? randomUUID(),
      type: event.type,
      at: new Date(now).toISOString(),
      data: event.data,
    }
    await this.#o.store.webhooks.enqueue(targets, { id: full.id, type: full.type, body: JSON.stringify(full) }, now)
    // Hooks get more than the receivers of webhooks: the address, the host and the session URL.
    const forHooks = JSON.stringify({ ...full, data })
    await this.#o.store.webhooks.enqueue(hooks, { id: full.id, type: full.type, body: forHooks }, now)
    this.kick()
  }

  /** Session events from the route stream: `session.ready` once per generation, `session.ended` with the reason. */
  follow(routes: RouteSource): () => void {
    // The last route of each instance: an ended event names the user, template and address it had.
    const last = new Map<string, RouteEntry>()
    return routes.subscribe((ev: RouteEvent) => {
      if (ev.type === 'reset') for (const r of ev.routes) last.set(r.instanceId, r)
      if (ev.type === 'upsert') last.set(ev.route.instanceId, ev.route)
      const gone = ev.type === 'remove' ? last.get(ev.instanceId) : undefined
      if (ev.type === 'remove') last.delete(ev.instanceId)
      const e =
        ev.type === 'upsert' && ev.route.state === 'ready'
          ? {
              id: `session.ready.${ev.route.instanceId}.${ev.route.generation}`,
              type: 'session.ready' as const,
              data: { instanceId: ev.route.instanceId, userId: ev.route.ownerId, template: ev.route.template },
              hook: this.#routeData(ev.route),
            }
          : ev.type === 'remove'
            ? {
                id: `session.ended.${ev.instanceId}`,
                type: 'session.ended' as const,
                data: { instanceId: ev.instanceId, reason: ev.reason },
                hook: gone ? this.#routeData(gone) : { url: this.#o.sessionUrl?.(ev.instanceId) ?? null },
              }
            : null
      if (!e || this.#seen.has(e.id)) return
      if (this.#seen.size > 10_000) this.#seen.clear()
      this.#seen.add(e.id)
      const { hook, ...event } = e
      this.emit(event, hook).catch((err: unknown) => this.#o.log.warn({ err, event: e.id }, 'webhook event not queued'))
    })
  }

  #routeData(r: RouteEntry): Record<string, unknown> {
    let host: string | null = null
    try {
      host = r.address ? new URL(r.address).hostname.replace(/^\[|\]$/g, '') : null
    } catch {
      // not a URL: no host
    }
    return {
      userId: r.ownerId,
      template: r.template,
      generation: r.generation,
      address: r.address,
      host,
      url: this.#o.sessionUrl?.(r.instanceId) ?? null,
    }
  }

  start(): void {
    if (this.#o.targets.length === 0 && this.#hooks.length === 0) return
    this.#timer = setInterval(() => this.kick(), this.#o.pollMs ?? 500)
    this.#timer.unref()
    this.kick()
  }

  /**
   * Starts a delivery loop for each webhook and hook that has none running: one queue's slow
   * receiver or a hook that runs into its timeout never holds another queue's events.
   */
  kick(): void {
    if (this.#stopped) return
    for (const q of this.#queues()) {
      if (this.#loops.has(q.name)) continue
      const loop = this.#drain(q)
        .catch((err: unknown) => this.#o.log.warn({ err, queue: q.name }, 'webhook delivery pass failed'))
        .finally(() => this.#loops.delete(q.name))
      this.#loops.set(q.name, loop)
    }
  }

  /** One pass over every queue: delivers due events in order until one fails or none is due. */
  async deliverDue(): Promise<void> {
    this.kick()
    await Promise.all([...this.#loops.values()])
  }

  #queues(): { name: string; leaseMs: number; run: (d: WebhookDelivery) => Promise<boolean> }[] {
    const webhooks = this.#o.targets.map((t) => ({
      name: t.name,
      leaseMs: CLAIM_LEASE_MS,
      run: (d: WebhookDelivery) => this.#attempt(t, d.seq, d.eventId, d.eventType, d.body, d.attempts),
    }))
    const hooks = this.#hooks.map((h) => ({
      name: hookQueue(h.name),
      // Longer than the run can take, so that no other replica claims a row that is still running.
      leaseMs: Math.max(CLAIM_LEASE_MS, h.timeoutMs + KILL_GRACE_MS + 30_000),
      run: (d: WebhookDelivery) => this.#runHook(h, d),
    }))
    return [...webhooks, ...hooks]
  }

  async #drain(q: { name: string; leaseMs: number; run: (d: WebhookDelivery) => Promise<boolean> }): Promise<void> {
    while (!this.#stopped) {
      const d = await this.#o.store.webhooks.claimNext(q.name, this.#now(), q.leaseMs)
      if (!d) return
      if (!(await q.run(d))) return
    }
  }

  /** One run of a hook for one queued event: the outcome in the delivery row, the audit and the log. */
  async #runHook(h: HookConfig, d: WebhookDelivery): Promise<boolean> {
    const event = JSON.parse(d.body) as WebhookEvent
    const vars = hookEnv(event.type, event.id, event.data)
    const r = await runHook(h, d.body, vars, this.#o.env ?? process.env, this.#abort.signal)
    if (this.#stopped) return false // killed by shutdown: the row stays pending, rerun after its lease
    const attempts = d.attempts + 1
    const now = this.#now()
    const error =
      r.outcome === 'ok'
        ? null
        : r.outcome === 'timeout'
          ? `timed out after ${h.timeoutMs} ms`
          : r.outcome === 'failed'
            ? `exit ${r.exitCode ?? r.signal}`
            : `spawn error: ${r.stderr}`
    const status = !error ? 'delivered' : attempts >= h.maxAttempts ? 'failed' : 'pending'
    const nextAttemptAt = status === 'pending' ? now + retryDelayMs(attempts, 1000, 3_600_000) : now
    await this.#o.store.webhooks.recordAttempt(d.seq, { status, httpStatus: r.exitCode, error, nextAttemptAt }, now)
    const instanceId = typeof event.data['instanceId'] === 'string' ? event.data['instanceId'] : null
    const detail = { hook: h.name, on: event.type, eventId: event.id, attempt: attempts, ...r }
    if (this.#o.audit) await this.#o.audit(instanceId, 'hook', `hook:${h.name}`, detail)
    if (error) this.#o.log.warn({ hook: h.name, event: event.id, attempts, status, error }, 'hook run failed')
    return !error || status === 'failed'
  }

  async #attempt(t: WebhookTarget, seq: number, id: string, type: string, body: string, before: number) {
    let httpStatus: number | null = null
    let error: string | null = null
    try {
      const res = await fetch(t.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'studiopool-webhooks',
          [SIGNATURE_HEADER]: signWebhook(t.secret, body, Math.floor(this.#now() / 1000)),
          [EVENT_ID_HEADER]: id,
          [EVENT_TYPE_HEADER]: type,
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(t.timeoutMs),
      })
      httpStatus = res.status
      await res.body?.cancel()
      if (res.status < 200 || res.status >= 300) error = `HTTP ${res.status}`
    } catch (err) {
      error = (err as Error).name === 'TimeoutError' ? `timed out after ${t.timeoutMs} ms` : (err as Error).message
    }
    const attempts = before + 1
    const now = this.#now()
    const status = !error ? 'delivered' : attempts >= t.maxAttempts ? 'failed' : 'pending'
    const nextAttemptAt = status === 'pending' ? now + retryDelayMs(attempts, t.retryBaseMs, t.retryMaxMs) : now
    await this.#o.store.webhooks.recordAttempt(seq, { status, httpStatus, error, nextAttemptAt }, now)
    if (error) this.#o.log.warn({ webhook: t.name, event: id, attempts, status, error }, 'webhook delivery failed')
    return !error || status === 'failed'
  }

  async stop(): Promise<void> {
    this.#stopped = true
    if (this.#timer) clearInterval(this.#timer)
    this.#abort.abort()
    await Promise.all([...this.#loops.values()])
  }
}

/** The composition root's step: a dispatcher fed by the route stream, stopped by `cleanup`. */
export function startWebhooks(
  o: WebhookOptions & { readonly routes: RouteSource },
  cleanup: (step: () => Promise<void>) => void,
): WebhookDispatcher {
  const events = new WebhookDispatcher(o)
  if (o.targets.length === 0 && !o.hooks?.length) return events
  const unfollow = events.follow(o.routes)
  events.start()
  cleanup(async () => {
    unfollow()
    await events.stop()
  })
  return events
}
