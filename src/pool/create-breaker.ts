import { failureKind, type ProviderFailureKind } from '../domain/errors.js'

/** Backoff after failed creates, per template (issue 9). Milliseconds. */
export interface BackoffOptions {
  /** First delay after a failure. */
  readonly baseMs: number
  /** Upper bound of the delay, however many failures in a row. */
  readonly maxMs: number
  /** Non-transient failures in a row that open the breaker (`auth` opens it at the first). */
  readonly openAfter: number
  /** [0, 1); injectable for tests. */
  readonly random: () => number
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  baseMs: 1_000, // 1 second
  maxMs: 300_000, // 5 minutes
  openAfter: 3,
  random: Math.random,
}

/** What the breaker says about one template now. */
export interface BreakerState {
  readonly template: string
  /** Open: non-transient failures; requests get 503 PROVIDER_UNAVAILABLE until a probe succeeds. */
  readonly open: boolean
  /** Failed creates in a row (any kind). */
  readonly failures: number
  readonly kind: ProviderFailureKind
  /** The last failure's message. */
  readonly cause: string
  /** Epoch ms before which no create is made for the template (backoff). */
  readonly nextAttemptAt: number
  /** An instance whose create is the probe of an open breaker, while it runs. */
  readonly probing: string | null
  readonly probingAt: number
}

/** A probe that never reported back (its instance was released before the create) frees its slot after this. */
const PROBE_TTL_MS = 600_000 // 10 minutes

/** Told of every failure (with the new state) and of the breaker closing (undefined). */
export type BreakerListener = (template: string, state: BreakerState | undefined) => void

/**
 * Exponential backoff with jitter and a circuit breaker for creates, per template. In memory, per
 * process: each process that creates learns from its own failures (a restart starts closed, and the
 * first create after it is the probe).
 *
 * - After a failed create no other create of the template starts before `nextAttemptAt`:
 *   delay = min(maxMs, baseMs × 2^(failures−1)), scaled by a random factor in [0.5, 1) (so that
 *   replicas and templates do not retry in step).
 * - After `openAfter` non-transient failures in a row (at once for `auth`), the breaker opens: the
 *   template is unavailable with the cause. Once the backoff has passed, exactly one create is let
 *   through as a probe (`permit`); its success closes the breaker, its failure re-opens it with a
 *   longer delay.
 */
export class CreateBreaker {
  readonly #o: BackoffOptions
  readonly #now: () => number
  readonly #states = new Map<string, BreakerState & { nonTransient: number }>()
  readonly #onChange: BreakerListener

  constructor(o: Partial<BackoffOptions>, now: () => number, onChange: BreakerListener = () => {}) {
    this.#o = { ...DEFAULT_BACKOFF, ...o }
    this.#now = now
    this.#onChange = onChange
  }

  state(template: string): BreakerState | undefined {
    return this.#states.get(template)
  }

  all(): BreakerState[] {
    return [...this.#states.values()]
  }

  /** The open breaker's cause, for /readyz, the dashboard and the templates list. */
  openReason(template: string): string | undefined {
    const s = this.#states.get(template)
    return s?.open ? `provider failing (${s.kind}): ${s.cause}` : undefined
  }

  /** Seconds until a create may be tried again (at least 1). */
  retryAfter(template: string): number {
    const s = this.#states.get(template)
    return Math.max(1, Math.ceil(((s?.nextAttemptAt ?? 0) - this.#now()) / 1000))
  }

  /** Whether a new create for `instanceId` may start now. Takes the probe slot of an open breaker. */
  permit(template: string, instanceId: string): boolean {
    const s = this.#states.get(template)
    if (!s) return true
    if (s.probing === instanceId) return true
    if (this.#now() < s.nextAttemptAt) return false
    if (!s.open) return true
    if (this.#probeBusy(s)) return false
    this.#states.set(template, { ...s, probing: instanceId, probingAt: this.#now() })
    return true
  }

  /** Whether `permit` would answer true, without taking the probe slot. */
  wouldPermit(template: string): boolean {
    const s = this.#states.get(template)
    if (!s) return true
    if (this.#now() < s.nextAttemptAt) return false
    return !s.open || !this.#probeBusy(s)
  }

  /** Gives the probe slot back when its instance will not be created after all. */
  release(template: string, instanceId: string): void {
    const s = this.#states.get(template)
    if (s?.probing === instanceId) this.#states.set(template, { ...s, probing: null, probingAt: 0 })
  }

  #probeBusy(s: BreakerState): boolean {
    return s.probing !== null && this.#now() - s.probingAt < PROBE_TTL_MS
  }

  succeeded(template: string): void {
    const s = this.#states.get(template)
    if (!s) return
    this.#states.delete(template)
    this.#onChange(template, undefined)
  }

  failed(template: string, err: unknown, message: string): BreakerState {
    const prev = this.#states.get(template)
    const kind = failureKind(err)
    const failures = (prev?.failures ?? 0) + 1
    const nonTransient = kind === 'transient' ? 0 : (prev?.nonTransient ?? 0) + 1
    const open = (prev?.open ?? false) || kind === 'auth' || nonTransient >= this.#o.openAfter
    const delay =
      Math.min(this.#o.maxMs, this.#o.baseMs * 2 ** Math.min(failures - 1, 30)) * (0.5 + this.#o.random() / 2)
    const next = {
      template,
      open,
      failures,
      kind,
      cause: message.slice(0, 500),
      nextAttemptAt: this.#now() + Math.round(delay),
      probing: null,
      probingAt: 0,
      nonTransient,
    }
    this.#states.set(template, next)
    this.#onChange(template, next)
    return next
  }
}
