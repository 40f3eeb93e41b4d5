/**
 * The predictive warm pool's forecast (issue 13) on synthetic series with a controlled clock: a
 * known weekly profile is forecast within a stated error, a sudden new peak is followed within a
 * stated number of slots, and the free instances it asks for cover a burst.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { forecast, HOUR, poissonQuantile, WEEK } from '../../src/schedule/forecast.js'
import { predictedFree, warmTarget } from '../../src/schedule/warm-target.js'

/** Monday 2026-01-05 00:00 UTC. */
const T0 = Date.parse('2026-01-05T00:00:00Z')

/** A small seeded PRNG (mulberry32), so the series is the same every run. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function poisson(mean: number, r: () => number): number {
  const l = Math.exp(-mean)
  let k = 0
  let p = 1
  do {
    k++
    p *= r()
  } while (p > l)
  return k - 1
}

/** Office-like weekly profile: weekdays 8–18 with a lunch dip, near zero at night and weekends. */
function profile(slot: number): number {
  const h = Math.floor((slot - T0) / HOUR) % 168
  const day = Math.floor(h / 24)
  const hour = h % 24
  if (day >= 5) return hour >= 10 && hour < 16 ? 1 : 0
  if (hour < 8 || hour >= 18) return 0.2
  if (hour === 12) return 6
  return hour < 10 ? 14 : 10
}

/** Arrivals spread uniformly within each slot, Poisson counts from `mean(slot)`. */
function series(fromSlot: number, toSlot: number, mean: (s: number) => number, r: () => number): number[] {
  const out: number[] = []
  for (let s = fromSlot; s < toSlot; s += HOUR) {
    const n = poisson(mean(s), r)
    for (let i = 0; i < n; i++) out.push(s + Math.floor(r() * HOUR))
  }
  return out
}

describe('forecast', () => {
  test('a known weekly profile: the week after four weeks of history is forecast within 20 % of the true demand', () => {
    const r = rng(7)
    const weeks = 5
    const arrivals = series(T0, T0 + weeks * WEEK, profile, r)
    let absErr = 0
    let total = 0
    let naiveErr = 0
    for (let s = T0 + 4 * WEEK; s < T0 + 5 * WEEK; s += HOUR) {
      const f = forecast({
        arrivals,
        slotStart: s,
        historyEnd: s,
        lookbackMs: 28 * 24 * HOUR,
        timezone: 'UTC',
        startMs: 60_000,
      })
      absErr += Math.abs(f.arrivals - profile(s))
      naiveErr += Math.abs(3.5 - profile(s)) // a flat mean of the profile, for scale
      total += profile(s)
    }
    const err = absErr / total
    assert.ok(
      err < 0.2,
      `weighted absolute error ${(err * 100).toFixed(1)} % (flat mean: ${((naiveErr / total) * 100).toFixed(0)} %)`,
    )
  })

  test('a sudden new peak (30 an hour where the history has none) is followed within 3 slots to 25 %', () => {
    const r = rng(11)
    const peakFrom = T0 + 2 * WEEK + 2 * 24 * HOUR + 13 * HOUR // Wednesday 13:00 of week 3
    const mean = (s: number) => (s >= peakFrom && s < peakFrom + 8 * HOUR ? 30 : profile(s))
    // Wednesday afternoons are quiet in the history: the profile there is replaced by a near zero.
    const quiet = (s: number) => {
      const h = Math.floor((s - T0) / HOUR) % 168
      return h >= 48 + 13 && h < 48 + 21 ? 0.1 : profile(s)
    }
    const arrivals = series(T0, T0 + 3 * WEEK, (s) => (s < peakFrom ? quiet(s) : mean(s)), r)
    const ahead: number[] = []
    for (let k = 0; k <= 4; k++) {
      const s = peakFrom + k * HOUR
      ahead.push(
        forecast({
          arrivals,
          slotStart: s,
          historyEnd: s,
          lookbackMs: 14 * 24 * HOUR,
          timezone: 'UTC',
          startMs: 60_000,
        }).arrivals,
      )
    }
    assert.ok(ahead[0]! < 5, `before the peak is seen the forecast is the history's: ${ahead[0]!.toFixed(1)}`)
    const within = ahead.findIndex((f) => Math.abs(f - 30) / 30 <= 0.25)
    assert.ok(within >= 1 && within <= 3, `forecasts per slot: ${ahead.map((f) => f.toFixed(1)).join(', ')}`)
  })

  test('a class of 40 arriving within two minutes every Tuesday at 9:00: its burst is forecast and kept warm before 9:00', () => {
    const r = rng(3)
    const slot = T0 + 2 * WEEK + 24 * HOUR + 9 * HOUR
    const arrivals = series(T0, slot - HOUR, profile, r)
    for (let w = 0; w < 2; w++)
      for (let i = 0; i < 40; i++) arrivals.push(T0 + w * WEEK + 24 * HOUR + 9 * HOUR + Math.floor(r() * 120_000))
    const f = forecast({
      arrivals,
      slotStart: slot,
      historyEnd: slot - HOUR,
      lookbackMs: 14 * 24 * HOUR,
      timezone: 'UTC',
      startMs: 60_000,
    })
    assert.ok(f.burst >= 15, `burst ${f.burst.toFixed(1)}`)
    // 08:58:30, lead 90 s: the 9:00 slot already counts.
    const t = warmTarget({
      template: {
        minFree: 0,
        maxInstances: 60,
        schedule: null,
        warmPool: { mode: 'predictive', targetHitRate: 0.95, lookbackMs: 14 * 24 * HOUR, min: 0, max: 60 },
      },
      now: slot - 90_000,
      startMs: 60_000,
      leadMs: 95_000,
      current: { ...f, slotStart: slot - HOUR, arrivals: 0.2, burst: 0.2 },
      next: f,
    })
    // The class spreads over two minutes, the start takes one: about 25 arrive within one start time.
    assert.ok(
      t.minFree >= Math.ceil(f.burst) && t.minFree >= 25,
      `kept warm before 9:00: ${t.minFree} (burst ${f.burst.toFixed(1)})`,
    )
    // Once the class has arrived the rest of the slot needs only the usual few.
    assert.ok(predictedFree(f, 0.95, 60_000, Math.round(f.arrivals)).free <= 3)
  })

  test('seasons follow local time across a DST change: Monday 9:00 in Berlin is 08:00Z before it and 07:00Z after', () => {
    const arrivals: number[] = []
    // 12 sessions at 9:00–9:12 CET on the two Mondays before the spring change (2026-03-29).
    for (const monday of ['2026-03-16T08:00:00Z', '2026-03-23T08:00:00Z'])
      for (let i = 0; i < 12; i++) arrivals.push(Date.parse(monday) + i * 60_000)
    const input = { arrivals, lookbackMs: 14 * 24 * HOUR, timezone: 'Europe/Berlin', startMs: 60_000 }
    const nine = Date.parse('2026-03-30T07:00:00Z') // 09:00 CEST
    const f = forecast({ ...input, slotStart: nine, historyEnd: nine })
    assert.ok(f.seasonal === 12, `seasonal at 09:00 local: ${f.seasonal}`)
    const eight = forecast({ ...input, slotStart: nine - HOUR, historyEnd: nine - HOUR })
    assert.equal(eight.seasonal, 0, '08:00 local had no sessions')
  })

  test('the Poisson quantile', () => {
    assert.equal(poissonQuantile(0.95, 0), 0)
    assert.equal(poissonQuantile(0.95, 1), 3) // P(X≤2)=0.920, P(X≤3)=0.981
    assert.equal(poissonQuantile(0.95, 10), 15)
    assert.ok(Math.abs(poissonQuantile(0.95, 1000) - 1052) <= 1)
  })
})
