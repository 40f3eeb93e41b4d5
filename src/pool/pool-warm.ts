import type { TemplateConfig } from '../config/types.js'
import { AppError } from '../domain/errors.js'
import { FREE_STATES, type Instance } from '../domain/instance.js'
import * as tr from '../domain/transitions.js'
import { buildHistory, forecastSlot, HOUR, slotOf, type SlotForecast } from '../schedule/forecast.js'
import { nextOpening, scheduleAt, type Schedule } from '../schedule/schedule.js'
import { warmTarget, type WarmTarget } from '../schedule/warm-target.js'
import type { PoolCore } from './pool-core.js'

/** How many recent starts the measured start time is taken from, and which quantile of them. */
const START_SAMPLES = 50
const START_QUANTILE = 0.9
/** Slots of forecast kept for the dashboard (forecast beside actuals). */
const KEEP_SLOTS = 48
export const FORECAST_META_PREFIX = 'warm-forecast:'

/** One slot's forecast as recorded for the dashboard. */
export interface ForecastPoint {
  readonly slotStart: number
  /** Forecast arrivals in the slot. */
  readonly arrivals: number
  /** Free instances the forecast asked for at the slot's start. */
  readonly predicted: number
  readonly applied: boolean
}

/** A template's forecasts, computed once per slot (issue 13: cheap, not per cycle). */
interface SlotCache {
  readonly slot: number
  readonly startMs: number
  readonly current?: SlotForecast
  readonly next?: SlotForecast
}

/** Refuses a new session outside the schedule's windows (`outside: unavailable`), naming the next opening. */
export function refuseOutsideSchedule(template: string, schedule: Schedule, now: number): void {
  if (scheduleAt(schedule, now).available) return
  const opens = nextOpening(schedule, now)
  const when = opens === null ? 'it has no opening' : `the next opening is ${new Date(opens).toISOString()}`
  throw new AppError('OUTSIDE_SCHEDULE', `template "${template}" is outside its schedule; ${when}`, {
    details:
      opens === null ? undefined : [{ path: '/payload/template', message: `opensAt ${new Date(opens).toISOString()}` }],
    retryAfter: opens === null ? undefined : Math.max(1, Math.ceil((opens - now) / 1000)),
  })
}

/**
 * The warm planner (issue 13): once per worker cycle, each template with a schedule or a warm-pool
 * policy gets its effective floor and cap (PoolCore.targets, which the top-up, the queue and
 * requests read), and free instances above the floor are stopped — all of them, outside an
 * `unavailable` schedule. Assigned instances are never touched: a session outlives its window
 * until its user, its idle timeout or its lifetime ends it (docs/cost.md "Schedules").
 */
export class WarmPlanner {
  readonly #cache = new Map<string, SlotCache>()

  constructor(private readonly c: PoolCore) {}

  /** The current targets (the admin view, the API). */
  targets(): ReadonlyMap<string, WarmTarget> {
    return this.c.targets
  }

  /** The forecasts recorded for a template's last slots; empty when none (or unreadable). */
  async recorded(template: string): Promise<ForecastPoint[]> {
    try {
      const v: unknown = JSON.parse((await this.c.d.store.getMeta(FORECAST_META_PREFIX + template)) ?? '[]')
      return Array.isArray(v) ? (v as ForecastPoint[]) : []
    } catch {
      return []
    }
  }

  async plan(): Promise<void> {
    const { c } = this
    if (c.closed) return
    const now = c.now()
    for (const t of c.d.config.templates) {
      if (!t.schedule && !t.warmPool) continue
      const cache = await this.#slot(t, now)
      const leadMs = cache.startMs + c.d.config.worker.intervalMs
      // A shared template's instances are free rows the shared pool sizes itself (pool-shared.ts):
      // only its lead is kept (its schedule's warm-ahead), nothing trimmed here.
      if (t.shared) {
        c.sharedLeads.set(t.name, leadMs)
        continue
      }
      const arrived = t.warmPool ? await this.#arrivals(t.name, slotOf(now), now) : 0
      const target = warmTarget({
        template: { ...t, schedule: t.schedule ?? null, warmPool: t.warmPool ?? null },
        now,
        startMs: cache.startMs,
        leadMs,
        current: cache.current,
        next: cache.next,
        arrivedThisSlot: arrived,
      })
      c.targets.set(t.name, target)
      await this.#trim(t, target, now, leadMs)
    }
  }

  /** The slot's forecasts and start time, computed when the slot changes. */
  async #slot(t: TemplateConfig, now: number): Promise<SlotCache> {
    const slot = slotOf(now)
    const cached = this.#cache.get(t.name)
    if (cached?.slot === slot) return cached
    const startMs = await this.measuredStart(t)
    let out: SlotCache = { slot, startMs }
    const w = t.warmPool
    if (w) {
      const arrivals = await this.#arrivalTimes(t.name, slot - w.lookbackMs, slot)
      const h = buildHistory({ arrivals, historyEnd: slot, lookbackMs: w.lookbackMs, timezone: w.timezone, startMs })
      const current = forecastSlot(h, slot)
      out = { ...out, current, next: forecastSlot(h, slot + HOUR) }
    }
    this.#cache.set(t.name, out)
    if (w && out.current) await this.#record(t, out.current, startMs, now)
    return out
  }

  /**
   * The template's measured start time: the 90th percentile of ready − started over its last 50
   * starts (rows kept for worker.retainEnded), else its start timeout (nothing measured yet).
   */
  async measuredStart(t: TemplateConfig): Promise<number> {
    const rows = await this.c.d.store.listInstances({ template: t.name })
    const samples: number[] = []
    for (let i = rows.length - 1; i >= 0 && samples.length < START_SAMPLES; i--) {
      const r = rows[i]!
      const from = r.startedAt ?? r.createdAt
      if (r.readyAt !== null && r.readyAt >= from) samples.push(r.readyAt - from)
    }
    if (!samples.length) return t.startTimeoutMs
    samples.sort((a, b) => a - b)
    return samples[Math.min(samples.length - 1, Math.floor(samples.length * START_QUANTILE))]!
  }

  async #arrivalTimes(template: string, from: number, to: number): Promise<number[]> {
    const rows = await this.c.d.store.listHistory({ template, from, to })
    return rows.filter((r) => r.startedAt >= from && r.startedAt < to).map((r) => r.startedAt)
  }

  async #arrivals(template: string, from: number, to: number): Promise<number> {
    return (await this.#arrivalTimes(template, from, to + 1)).length
  }

  /** The slot's forecast, kept for the dashboard's forecast-beside-actuals chart (store meta: all roles see it). */
  async #record(t: TemplateConfig, f: SlotForecast, startMs: number, now: number): Promise<void> {
    const key = FORECAST_META_PREFIX + t.name
    const target = warmTarget({
      template: { ...t, schedule: t.schedule ?? null, warmPool: t.warmPool ?? null },
      now,
      startMs,
      leadMs: startMs,
      current: f,
    })
    try {
      const prev = await this.recorded(t.name)
      const point: ForecastPoint = {
        slotStart: f.slotStart,
        arrivals: Math.round(f.arrivals * 100) / 100,
        predicted: target.predicted ?? 0,
        applied: target.applied,
      }
      const next = [...prev.filter((p) => p.slotStart !== f.slotStart), point].slice(-KEEP_SLOTS)
      await this.c.d.store.setMeta(key, JSON.stringify(next))
    } catch (err) {
      this.c.d.log.warn({ template: t.name, err: (err as Error).message }, 'could not record the warm-pool forecast')
    }
  }

  /**
   * Free instances above the floor are stopped, ready ones first and only those free for longer
   * than the lead (a just-made instance is not undone by the next cycle's smaller number).
   * A compare-and-set on a free owner: a concurrent claim wins.
   */
  async #trim(t: TemplateConfig, target: WarmTarget, now: number, leadMs: number): Promise<void> {
    const { c } = this
    const free = await c.d.store.listInstances({ template: t.name, assigned: false, states: FREE_STATES })
    let excess = free.length - target.minFree
    if (excess <= 0) return
    const closing = !target.available && target.minFree === 0
    const candidates = free
      .filter((f) => !c.busy.has(f.id) && (f.state === 'ready' || closing))
      .filter((f) => closing || now - (f.readyAt ?? f.createdAt) >= leadMs)
      .sort((a, b) => Number(b.state === 'ready') - Number(a.state === 'ready') || a.createdAt - b.createdAt)
    const stopped: Instance[] = []
    for (const f of candidates) {
      if (excess <= 0) break
      const v = await c.apply(f.id, tr.trimFree(f, now))
      if (!v) continue
      stopped.push(v)
      excess--
    }
    for (const v of stopped) {
      await c.audit(v.id, 'trimmed', null, { minFree: target.minFree, available: target.available })
      c.routes.remove(v.id, 'schedule')
      c.background(c.lifecycle.destroy(v, 'schedule'))
    }
  }
}
