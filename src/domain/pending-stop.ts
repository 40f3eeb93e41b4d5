import type { Instance } from './instance.js'

/**
 * A pending stop (issue 13, "warnings and controls where the user works"): when, and why, the pool
 * will end or stop a session unless something changes. Computed by the pool (pool/pending-stops.ts)
 * from the template's idle timeout and max lifetime, plus deadline sources registered at start
 * (budgets, schedules); shown by the gateway's banner and the dashboard.
 */
export const STOP_REASONS = ['idle', 'lifetime', 'budget', 'schedule'] as const
export type StopReason = (typeof STOP_REASONS)[number]

export interface PendingStop {
  readonly reason: StopReason
  /** Epoch ms. May be in the past: the worker has not acted yet. */
  readonly at: number
}

/** The instance fields the deadlines are computed from. */
export type StopClockInstance = Pick<
  Instance,
  'state' | 'ownerId' | 'createdAt' | 'readyAt' | 'assignedAt' | 'lastActivityAt'
>

/** States in which the worker culls (architecture.md "The worker"). */
const TIMED_STATES: ReadonlySet<string> = new Set(['ready', 'suspended'])

/**
 * When an assigned instance is culled for idleness, or null (free, not running, or no timeout).
 * Idle time counts from when the user could first use it: a cold start is not idleness.
 */
export function idleStopAt(inst: StopClockInstance, idleTimeoutMs: number): number | null {
  if (!inst.ownerId || idleTimeoutMs <= 0 || !TIMED_STATES.has(inst.state)) return null
  return Math.max(inst.lastActivityAt ?? 0, inst.assignedAt ?? 0, inst.readyAt ?? 0) + idleTimeoutMs
}

/**
 * When the instance reaches its maximum lifetime, or null: an assigned one counts from its
 * assignment, a free warm one from its creation (recycled: fresh images, no drift).
 */
export function lifetimeStopAt(inst: StopClockInstance, maxLifetimeMs: number): number | null {
  if (maxLifetimeMs <= 0 || !TIMED_STATES.has(inst.state)) return null
  return (inst.ownerId ? (inst.assignedAt ?? inst.createdAt) : inst.createdAt) + maxLifetimeMs
}

/** The earliest of the candidates (the first listed wins a tie), or null when there is none. */
export function earliestStop(candidates: Iterable<PendingStop | null | undefined>): PendingStop | null {
  let best: PendingStop | null = null
  for (const c of candidates) if (c && Number.isFinite(c.at) && (best === null || c.at < best.at)) best = c
  return best
}

/** The template's own deadlines (idle, then lifetime) for one instance, earliest first. */
export function templateStops(
  inst: StopClockInstance,
  t: { readonly idleTimeoutMs: number; readonly maxLifetimeMs: number },
): PendingStop[] {
  const out: PendingStop[] = []
  const idle = idleStopAt(inst, t.idleTimeoutMs)
  if (idle !== null) out.push({ reason: 'idle', at: idle })
  const life = lifetimeStopAt(inst, t.maxLifetimeMs)
  if (life !== null) out.push({ reason: 'lifetime', at: life })
  return out
}

/**
 * An extra deadline source, registered with the pool at start (a budget's `budgetStopAt(instance)`,
 * a schedule's window end). Returns the stop it would make for this instance, or null for none.
 * A source that throws is skipped for that instance (and logged), never the others.
 */
export type DeadlineSource = (
  inst: Instance,
) => PendingStop | null | undefined | Promise<PendingStop | null | undefined>

/** What the warning shows for one session. */
export interface SessionStopStatus {
  readonly instanceId: string
  readonly state: Instance['state']
  /** The earliest stop, or null when nothing is due. */
  readonly pendingStop: PendingStop | null
  /** Epoch ms, the pool's clock: the client counts down from `pendingStop.at - now`, not from its own clock. */
  readonly now: number
  /** The banner is shown when the stop is at most this far away (`widget.warnBefore`). */
  readonly warnBeforeMs: number
  /** Whether `pendingStop` is within the warning lead time. */
  readonly warn: boolean
  /** "Keep working" helps: the stop is an idle cull (activity moves it). */
  readonly canKeepWorking: boolean
  /** The instance's provider can suspend it (stop, keep the disk) and it is running. */
  readonly canSuspend: boolean
}

/** The decision of `SessionStopStatus.warn`, in one place for the gateway and the dashboard. */
export function withinWarning(stop: PendingStop | null, now: number, warnBeforeMs: number): boolean {
  return stop !== null && warnBeforeMs > 0 && stop.at - now <= warnBeforeMs
}

/**
 * What the gateway may do about a session's pending stop (wired by main: the pool in-process). The
 * gateway has checked that `userId` may use the session (owner, or admin where allowed) first.
 */
export interface SessionControls {
  /** The session's status, or undefined when it is not live. */
  status(instanceId: string): Promise<SessionStopStatus | undefined>
  /** Activity now (the idle cull moves back), written through at once; then the new status. */
  keepWorking(instanceId: string, userId: string): Promise<SessionStopStatus | undefined>
  /** Ends the session as its user would from the dashboard. */
  stop(instanceId: string, userId: string): Promise<void>
  /** Suspends it (ConflictError when the provider cannot or it is not ready). */
  suspend(instanceId: string, userId: string): Promise<void>
}
