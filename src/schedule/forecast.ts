import { localTime } from './schedule.js'

/**
 * The demand forecast of the predictive warm pool (issue 13, docs/cost.md "Predictive warm pool").
 * Pure: arrivals in, a forecast out; the caller reads the history and owns the clock.
 *
 * Slots are clock hours (UTC hours; in a zone with a whole-hour offset they are its local hours).
 * Each slot has a seasonal key, its local weekday and hour in the template's time zone, so a DST
 * change keeps "Tuesday 9:00" at 9:00 local time. For a slot the forecast is
 *
 *   F = S · r + max(0, e)
 *
 * - S, the weekly seasonal mean: the mean of the arrivals in the slot with the same key in each
 *   earlier week of the lookback;
 * - r, the recent level: (actual + 10) / (seasonal + 10) over the last 24 completed slots, clipped to
 *   [0.5, 2] — a busier or quieter week scales the whole profile;
 * - e, the residual level: an exponentially weighted mean (α = 0.7) of actual − S · r over the last 6
 *   completed slots, counted only above the noise of a Poisson count (minus √(S·r + 1)) — a new
 *   peak the history does not know is followed within a few slots, a known one does not add twice.
 *
 * Besides the slot's arrivals it forecasts its burst: P, the seasonal mean of the most arrivals seen
 * within one start time anywhere in the slot (a class of 40 that arrives within two minutes), scaled
 * by r. warm-target.ts turns both into a number of free instances.
 */

export const HOUR = 3_600_000
export const WEEK = 7 * 24 * HOUR
const LEVEL_SLOTS = 24
const RESIDUAL_SLOTS = 6
const ALPHA = 0.7
/** Pseudo-arrivals added to both sides of the level ratio, so that a quiet day's noise does not swing it. */
const LEVEL_PRIOR = 10

export interface ForecastInput {
  /** Request arrival times (epoch ms), any order; only those before `slotStart` count. */
  readonly arrivals: readonly number[]
  /** Start of the slot to forecast (a multiple of an hour). */
  readonly slotStart: number
  /** Completed history ends here (≤ slotStart): usually the start of the current slot. */
  readonly historyEnd: number
  readonly lookbackMs: number
  readonly timezone: string
  /** The measured start time: the burst is the most arrivals within this long. */
  readonly startMs: number
}

export interface SlotForecast {
  readonly slotStart: number
  /** Expected arrivals in the slot. */
  readonly arrivals: number
  /** Expected most arrivals within one start time in the slot. */
  readonly burst: number
  readonly seasonal: number
  readonly level: number
  readonly residual: number
}

export const slotOf = (at: number) => Math.floor(at / HOUR) * HOUR

function keyOf(slotStart: number, tz: string): number {
  const { day, minute } = localTime(slotStart + HOUR / 2, tz)
  return day * 24 + Math.floor(minute / 60)
}

/** Most arrivals within any window of `width` ms (sorted input). */
function burstOf(sorted: readonly number[], width: number): number {
  let best = 0
  for (let i = 0, j = 0; j < sorted.length; j++) {
    while (sorted[j]! - sorted[i]! >= width) i++
    best = Math.max(best, j - i + 1)
  }
  return best
}

/** Arrivals of the lookback grouped by slot: counts and bursts per slot start. */
export interface History {
  readonly from: number
  readonly to: number
  readonly timezone: string
  readonly counts: ReadonlyMap<number, number>
  readonly bursts: ReadonlyMap<number, number>
}

export function buildHistory(
  input: Pick<ForecastInput, 'arrivals' | 'historyEnd' | 'lookbackMs' | 'timezone' | 'startMs'>,
): History {
  const to = slotOf(input.historyEnd)
  const from = to - input.lookbackMs
  const bySlot = new Map<number, number[]>()
  for (const a of input.arrivals) {
    if (a < from || a >= to) continue
    const s = slotOf(a)
    let list = bySlot.get(s)
    if (!list) bySlot.set(s, (list = []))
    list.push(a)
  }
  const counts = new Map<number, number>()
  const bursts = new Map<number, number>()
  for (const [s, list] of bySlot) {
    list.sort((x, y) => x - y)
    counts.set(s, list.length)
    bursts.set(s, burstOf(list, Math.max(1, input.startMs)))
  }
  return { from, to, timezone: input.timezone, counts, bursts }
}

/**
 * The weekly seasonal mean of a slot: the mean of the same local weekday and hour in each earlier
 * week of the lookback (a week back is 167 or 169 hours across a DST change: the slot with the same
 * key is taken). Only weeks the history covers count, from the first arrival on, so a pool younger
 * than its lookback is not diluted by empty weeks; the slot itself never counts towards its season.
 */
function seasonal(h: History, s: number, first: number): { arrivals: number; burst: number } {
  const key = keyOf(s, h.timezone)
  let n = 0
  let a = 0
  let b = 0
  for (let k = 1; s - k * WEEK >= Math.max(h.from, first); k++) {
    let p = s - k * WEEK
    if (keyOf(p, h.timezone) !== key) p = keyOf(p + HOUR, h.timezone) === key ? p + HOUR : p - HOUR
    n++
    a += h.counts.get(p) ?? 0
    b += h.bursts.get(p) ?? 0
  }
  return n ? { arrivals: a / n, burst: b / n } : { arrivals: 0, burst: 0 }
}

/** The forecast for one slot from a built history (cheap: called once per slot and template). */
export function forecastSlot(h: History, slotStart: number): SlotForecast {
  let first = h.to
  for (const s of h.counts.keys()) first = Math.min(first, s)
  // The first week of history has no season of its own: it starts the seasons of the weeks after it.
  const actual = (s: number) => h.counts.get(s) ?? 0
  let a = 0
  let e = 0
  for (let i = 1; i <= LEVEL_SLOTS; i++) {
    const s = h.to - i * HOUR
    if (s < h.from || s - WEEK < first) break
    a += actual(s)
    e += seasonal(h, s, first).arrivals
  }
  const level = Math.min(2, Math.max(0.5, (a + LEVEL_PRIOR) / (e + LEVEL_PRIOR)))
  let residual = 0
  for (let i = RESIDUAL_SLOTS; i >= 1; i--) {
    const s = h.to - i * HOUR
    if (s < h.from) continue
    residual = ALPHA * (actual(s) - seasonal(h, s, first).arrivals * level) + (1 - ALPHA) * residual
  }
  const here = seasonal(h, slotStart, first)
  const base = here.arrivals * level
  // Only a residual above the noise of a Poisson count counts: noise alone must not inflate the pool.
  const extra = Math.max(0, residual - Math.sqrt(base + 1))
  return {
    slotStart,
    arrivals: base + extra,
    burst: here.burst * level,
    seasonal: here.arrivals,
    level,
    residual,
  }
}

/** One-call form: history and forecast. */
export function forecast(input: ForecastInput): SlotForecast {
  return forecastSlot(buildHistory(input), input.slotStart)
}

/** The smallest n with P(X ≤ n) ≥ q for X ~ Poisson(mean). */
export function poissonQuantile(q: number, mean: number): number {
  if (!(mean > 0)) return 0
  if (mean > 500) return Math.ceil(mean + normalQuantile(q) * Math.sqrt(mean))
  let p = Math.exp(-mean)
  let cdf = p
  let n = 0
  while (cdf < q && n < 10_000) {
    n++
    p *= mean / n
    cdf += p
  }
  return n
}

/** The standard normal quantile, for the Poisson quantile of a large mean. */
function normalQuantile(q: number): number {
  // Abramowitz–Stegun 26.2.23, |error| < 4.5e-4.
  const p = q < 0.5 ? q : 1 - q
  const t = Math.sqrt(-2 * Math.log(p))
  const z = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t ** 3)
  return q < 0.5 ? -z : z
}
