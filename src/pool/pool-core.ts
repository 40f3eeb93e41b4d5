import { createHash, randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { deriveAppToken } from '../domain/app-token.js'
import type { Config, TemplateConfig } from '../config/types.js'
import { ProviderError } from '../domain/errors.js'
import type { Instance } from '../domain/instance.js'
import type { NewRow, Transition } from '../domain/transitions.js'
import type { Metrics } from '../metrics.js'
import { LABEL_ASSIGNED_AT, LABEL_OWNER, LABEL_REQUESTER, type Provider } from '../providers/provider.js'
import type { Store, StoreOps } from '../store/store.js'
import { AuditBatch } from './audit-batch.js'
import { QueueHint } from './queue-hint.js'
import { CreateBreaker, type BackoffOptions } from './create-breaker.js'
import type { Capacity } from './pool-capacity.js'
import type { Lifecycle } from './pool-lifecycle.js'
import { scheduleAt } from '../schedule/schedule.js'
import type { WarmTarget } from '../schedule/warm-target.js'
import type { SharedBounds } from './pool-shared.js'
import { RouteProjection, type RoutePublisher } from './pool-routes.js'

/** Fault-injection points for recovery tests (kill the server between two steps). Never set in production. */
export interface FaultHooks {
  afterProviderCreate?(instanceId: string): void | Promise<void>
  beforeProviderCreate?(instanceId: string): void | Promise<void>
}

export interface PoolDeps {
  readonly config: Config
  readonly store: Store
  /** Providers by name; every template's provider must be present. */
  readonly providers: ReadonlyMap<string, Provider>
  readonly routes: RoutePublisher
  readonly log: Logger
  readonly metrics?: Metrics
  readonly now?: () => number
  readonly faults?: FaultHooks
  /** Problems found per template at start (missing program…): such templates refuse requests. */
  readonly unavailable?: ReadonlyMap<string, string>
  /** URL the instance posts progress to; `{id}` is replaced. */
  readonly progressUrl?: (instanceId: string) => string
  /** The per-instance app token (domain/app-token.ts with the gateway secret); tests may leave it out. */
  readonly appToken?: (instanceId: string, generation: number) => string
  /** Backoff and breaker for failed creates (create-breaker.ts DEFAULT_BACKOFF); tests shorten it. */
  readonly backoff?: Partial<BackoffOptions>
  /**
   * Effective minInstances/maxInstances of a shared template now (issue 13's schedules and budgets
   * plug in here); default the template's own (pool-shared.ts).
   */
  readonly sharedBounds?: (t: TemplateConfig, now: number) => SharedBounds
}

/**
 * Resolves on the next turn of the event loop. The fail → free capacity → top-up → create path runs
 * through it, so that a provider that fails at once (and a store whose driver resolves synchronously,
 * better-sqlite3) can never keep the loop in the microtask queue and starve I/O (issue 9).
 */
export const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))
/**
 * Top-ups yield to warm claims (issue 10): a run of top-up passes starts once no request has arrived
 * for LULL_MS, or TOP_UP_MAX_WAIT_MS after it was asked for at the latest, and then runs to the end.
 * On SQLite everything shares one thread, and a top-up (the insert, the provider's create, the
 * readiness probe, four state writes) costs several claims' worth of it: a burst of claims is
 * served first and the warm pool refills behind it. Under claims that never pause, the refill
 * starts 200 ms late and then competes with them as before; a pool that runs dry meanwhile serves
 * cold starts, which are never deferred. Wall-clock time, not the pool's clock: this is scheduling.
 */
const LULL_MS = 2
const TOP_UP_MAX_WAIT_MS = 200

export const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

export function errText(err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}

/** The owner and assignment labels of an assigned instance (none for a free one). */
export function ownerLabels(inst: Pick<Instance, 'ownerId' | 'keyName' | 'assignedAt'>): Record<string, string> {
  if (!inst.ownerId) return {}
  const out: Record<string, string> = { [LABEL_OWNER]: inst.ownerId }
  if (inst.assignedAt !== null) out[LABEL_ASSIGNED_AT] = String(inst.assignedAt)
  if (inst.keyName) out[LABEL_REQUESTER] = inst.keyName
  return out
}

/**
 * What the pool's parts share: the dependencies, the instances busy in this process, the background
 * tasks, the breaker, the route projection, and the one way instance state is written (`apply`).
 */
export class PoolCore {
  readonly d: PoolDeps
  readonly now: () => number
  readonly templates: Map<string, TemplateConfig>
  /** Instances with a create or destroy running in this process, so the worker does not start a second. */
  readonly busy = new Set<string>()
  /** Pending background work, awaited by drain() (tests, shutdown). */
  readonly pending = new Set<Promise<unknown>>()
  /** Backoff and circuit breaker for creates, per template. */
  readonly breaker: CreateBreaker
  readonly routes: RouteProjection
  /** Whether the queue is known to be empty without a store read (queue-hint.ts). */
  readonly queue = new QueueHint()
  /** Audit rows of a turn, written as one statement (audit-batch.ts). */
  readonly #audits: AuditBatch
  closed = false
  /** When the last request arrived (performance.now()), for claimsLull. */
  #lastRequestAt = -Infinity
  /**
   * The effective warm-pool floor and cap per template (schedule and forecast, issue 13), set by
   * the warm planner (pool-warm.ts) once per worker cycle; absent = the template's own values.
   */
  readonly targets = new Map<string, WarmTarget>()
  /** A scheduled shared template's lead (measured start time + one cycle), set by the warm planner; absent = its start timeout. */
  readonly sharedLeads = new Map<string, number>()
  /** Late-bound by PoolService's constructor: the parts call each other. */
  lifecycle!: Lifecycle
  capacity!: Capacity
  /** Without a configured app-token function (tests), tokens from a per-process random secret. */
  readonly fallbackAppToken = (
    (secret: string) => (id: string, gen: number) =>
      deriveAppToken(secret, id, gen)
  )(randomBytes(32).toString('base64url'))

  constructor(deps: PoolDeps) {
    this.d = deps
    this.templates = new Map(deps.config.templates.map((t) => [t.name, t]))
    this.now = deps.now ?? Date.now
    this.breaker = new CreateBreaker(deps.backoff ?? {}, this.now, (template, st) => {
      deps.metrics?.templateUnavailable.set({ template }, st?.open ? 1 : 0)
      if (!st) deps.log.info({ template }, 'provider create succeeded; the template is available again')
      else if (st.open)
        deps.log.error(
          { template, kind: st.kind, failures: st.failures, retryInMs: st.nextAttemptAt - this.now() },
          `template "${template}" is unavailable: ${st.cause}`,
        )
      else
        deps.log.warn(
          { template, kind: st.kind, failures: st.failures, retryInMs: st.nextAttemptAt - this.now() },
          'provider create failed; backing off',
        )
    })
    this.routes = new RouteProjection(deps.store, deps.routes, this.templates, (p) => this.background(p))
    this.#audits = new AuditBatch(
      (rows) => deps.store.audit(rows),
      (err, row) => deps.log.warn({ err: errText(err), event: row.event }, 'audit write failed'),
    )
  }

  /** Applies a named transition (domain/transitions.ts) as one compare-and-set; undefined when its condition failed. */
  apply(id: string, t: Transition, tx: StoreOps = this.d.store): Promise<Instance | undefined> {
    return tx.updateInstance(id, t.patch, t.requires)
  }

  /** Inserts a new row (domain/transitions.ts newCold, newQueued, newWarm). */
  insert(row: NewRow, tx: StoreOps = this.d.store): Promise<Instance> {
    if (row.state === 'queued') this.queue.changed()
    return tx.insertInstance(row)
  }

  /**
   * Free instances to keep for a template now. A scheduled or predictive template has no target in
   * a process that runs no worker (split roles: an API replica): there its warm pool is the
   * worker's to top up, not refilled to the static minFree and trimmed back.
   */
  minFreeOf(t: TemplateConfig): number {
    const target = this.targets.get(t.name)
    if (target) return target.minFree
    return t.schedule || t.warmPool ? 0 : t.minFree
  }

  /** The template's cap now: the planner's, else the schedule's at this instant, else the template's. */
  maxOf(t: TemplateConfig): number {
    const target = this.targets.get(t.name)
    if (target) return target.maxInstances
    return t.schedule ? scheduleAt(t.schedule, this.now()).maxInstances : t.maxInstances
  }

  provider(template: string): Provider {
    const t = this.templates.get(template)
    const p = t && this.d.providers.get(t.provider)
    if (!p)
      throw new ProviderError(t?.provider ?? '?', `no provider for template "${template}"`, {
        code: 'PROVIDER_UNAVAILABLE',
      })
    return p
  }

  /** The price per hour of the template's instances now (docs/cost.md "Prices"); set by PoolService. */
  price: (template: string, market?: 'on-demand' | 'spot') => number = (template) =>
    this.templates.get(template)?.pricePerHour ?? 0

  /** An assignment's cost for the history row, at today's price (the cost segments are the exact account). */
  cost(inst: Instance, now: number): number | null {
    if (!this.templates.has(inst.template)) return null
    const m = inst.tags['market']
    const perHour = this.price(inst.template, m === 'spot' || m === 'on-demand' ? m : undefined)
    if (!perHour) return null
    const from = inst.assignedAt ?? inst.createdAt
    return Math.round(((now - from) / 3_600_000) * perHour * 10_000) / 10_000
  }

  /**
   * Appends an audit row with this turn's others (audit-batch.ts; resolves once written, never
   * rejects), and logs the same event as a structured line (issue 17: the audit is not only in the
   * database): `{component: 'lifecycle', event, instanceId, actor, …detail, …logOnly}`. `logOnly`
   * adds what the line says and the row does not (`kind: warm`, `secondsToReady`).
   */
  audit(
    instanceId: string | null,
    event: string,
    actor: string | null,
    detail: Record<string, unknown>,
    logOnly: Record<string, unknown> = {},
  ): Promise<void> {
    this.logEvent(event, { instanceId, actor, ...detail, ...logOnly })
    return this.#audits.add({ at: this.now(), instanceId, event, actor, detail })
  }

  /** A request arrived (claimsLull waits for a pause in these). */
  noteRequest(): void {
    this.#lastRequestAt = performance.now()
  }

  /** Resolves once no request has arrived for LULL_MS, or after TOP_UP_MAX_WAIT_MS (see LULL_MS). */
  async claimsLull(): Promise<void> {
    const start = performance.now()
    for (;;) {
      const now = performance.now()
      const quiet = now - this.#lastRequestAt
      if (quiet >= LULL_MS || now - start >= TOP_UP_MAX_WAIT_MS || this.closed) return
      await new Promise((r) => setTimeout(r, Math.max(1, LULL_MS - quiet)))
    }
  }

  /** A lifecycle log line without an audit row (a warm claim's row is written by the store's claimWarm). */
  logEvent(event: string, fields: Record<string, unknown>): void {
    this.#lifecycleLog ??= this.d.log.child({ component: 'lifecycle' })
    this.#lifecycleLog.info({ event, ...fields }, `session ${event}`)
  }
  #lifecycleLog: PoolDeps['log'] | undefined

  /** Runs work in the background, tracked so that drain() and close() wait for it. */
  background(p: Promise<unknown>): void {
    const tracked = p
      .catch((err) => this.d.log.error({ err: errText(err) }, 'background pool task failed'))
      .finally(() => this.pending.delete(tracked))
    this.pending.add(tracked)
  }

  /** Waits until no background task is left (bounded by rounds, since tasks spawn tasks). */
  async drain(rounds = 50): Promise<void> {
    for (let i = 0; i < rounds && this.pending.size; i++) await Promise.allSettled([...this.pending])
  }
}
