import { HOUR, poissonQuantile, type SlotForecast } from './forecast.js'
import { effectiveSchedule, nextOpening, type Schedule } from './schedule.js'

/**
 * The effective warm-pool target of one template at one instant (issue 13): its schedule's floor and
 * cap (warming ahead by the measured start time), and the predictive floor from the forecast. Pure.
 */

export interface WarmPoolPolicy {
  /** `predictive`: the forecast sets the floor; `forecast-only`: computed and shown, not applied. */
  readonly mode: 'predictive' | 'forecast-only'
  /** The probability that the demand during one start time is covered by free instances. */
  readonly targetHitRate: number
  readonly lookbackMs: number
  readonly min: number
  readonly max: number
}

export interface TargetTemplate {
  readonly minFree: number
  readonly maxInstances: number
  readonly schedule: Schedule | null
  readonly warmPool: WarmPoolPolicy | null
}

export interface TargetInput {
  readonly template: TargetTemplate
  readonly now: number
  /** Measured start time (ready − created), ms. */
  readonly startMs: number
  /** How far ahead to warm: the start time plus one worker cycle. */
  readonly leadMs: number
  /** Forecasts of the current slot and the next one (predictive templates). */
  readonly current?: SlotForecast
  readonly next?: SlotForecast
  /** Arrivals so far in the current slot. */
  readonly arrivedThisSlot?: number
}

export interface WarmTarget {
  /** Free instances to keep now. */
  readonly minFree: number
  readonly maxInstances: number
  /** New sessions are served (false: outside the schedule's windows with `outside: unavailable`). */
  readonly available: boolean
  /** When unavailable: the next opening (epoch ms), if any. */
  readonly opensAt: number | null
  /** The schedule's own floor (before the forecast). */
  readonly scheduleMinFree: number
  /** What the forecast asks for (null: no predictive policy), applied or not. */
  readonly predicted: number | null
  readonly applied: boolean
}

/**
 * Free instances that cover the demand of one start time at the target rate: the Poisson quantile of
 * the larger of the slot's average demand over one start time and its forecast burst, the burst
 * limited to what is still expected in the slot (arrivals so far count against it, so a class that
 * has arrived does not keep 40 warm for the rest of the hour). The average part is not limited: a
 * slot busier than forecast keeps its usual few warm until the residual raises the next forecast.
 */
export function predictedFree(
  f: SlotForecast,
  q: number,
  startMs: number,
  arrived: number,
): { readonly free: number; readonly mean: number } {
  const remaining = Math.max(0, f.arrivals - arrived)
  const uniform = (f.arrivals * Math.min(startMs, HOUR)) / HOUR
  const mean = Math.max(uniform, Math.min(remaining, f.burst))
  return { free: poissonQuantile(q, mean), mean }
}

export function warmTarget(input: TargetInput): WarmTarget {
  const { template: t, now } = input
  const sched = t.schedule ? effectiveSchedule(t.schedule, now, input.leadMs) : null
  const scheduleMinFree = sched ? sched.minFree : t.minFree
  const maxInstances = sched ? sched.maxInstances : t.maxInstances
  const available = sched ? sched.available : true
  const opensAt = sched && !sched.available && t.schedule ? nextOpening(t.schedule, now) : null
  let predicted: number | null = null
  if (t.warmPool && input.current) {
    let p = predictedFree(input.current, t.warmPool.targetHitRate, input.startMs, input.arrivedThisSlot ?? 0).free
    // The next slot counts once it begins within the lead: its instances are ready when it starts.
    if (input.next && input.next.slotStart - now <= input.leadMs)
      p = Math.max(p, predictedFree(input.next, t.warmPool.targetHitRate, input.startMs, 0).free)
    predicted = Math.min(t.warmPool.max, Math.max(t.warmPool.min, p))
  }
  const applied = predicted !== null && t.warmPool?.mode === 'predictive'
  // Never below the schedule's floor, never above the cap; outside an `unavailable` schedule's
  // windows nothing is kept warm unless a window opens within the lead (then its floor applies).
  let minFree = applied ? Math.max(scheduleMinFree, predicted!) : scheduleMinFree
  if (sched && !available && scheduleMinFree === 0) minFree = 0
  minFree = Math.min(minFree, maxInstances)
  return { minFree, maxInstances, available, opensAt, scheduleMinFree, predicted, applied }
}
