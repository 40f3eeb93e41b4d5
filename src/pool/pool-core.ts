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
import { CreateBreaker, type BackoffOptions } from './create-breaker.js'
import type { Capacity } from './pool-capacity.js'
import type { Lifecycle } from './pool-lifecycle.js'
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
}

/**
 * Resolves on the next turn of the event loop. The fail → free capacity → top-up → create path runs
 * through it, so that a provider that fails at once (and a store whose driver resolves synchronously,
 * better-sqlite3) can never keep the loop in the microtask queue and starve I/O (issue 9).
 */
export const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve))
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
  closed = false
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
  }

  /** Applies a named transition (domain/transitions.ts) as one compare-and-set; undefined when its condition failed. */
  apply(id: string, t: Transition, tx: StoreOps = this.d.store): Promise<Instance | undefined> {
    return tx.updateInstance(id, t.patch, t.requires)
  }

  /** Inserts a new row (domain/transitions.ts newCold, newQueued, newWarm). */
  insert(row: NewRow, tx: StoreOps = this.d.store): Promise<Instance> {
    return tx.insertInstance(row)
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

  cost(inst: Instance, now: number): number | null {
    const t = this.templates.get(inst.template)
    if (!t || !t.pricePerHour) return null
    const from = inst.assignedAt ?? inst.createdAt
    return Math.round(((now - from) / 3_600_000) * t.pricePerHour * 10_000) / 10_000
  }

  async audit(
    instanceId: string | null,
    event: string,
    actor: string | null,
    detail: Record<string, unknown>,
  ): Promise<void> {
    try {
      await this.d.store.audit({ at: this.now(), instanceId, event, actor, detail })
    } catch (err) {
      this.d.log.warn({ err: errText(err), event }, 'audit write failed')
    }
  }

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
