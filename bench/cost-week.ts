/**
 * The synthetic week of `npm run bench:cost` (issue 13): a department's users in Europe/Berlin — a
 * morning ramp, a lunch dip, an afternoon, evenings and weekends near zero, the same users coming
 * back day after day — and a class of 40 students at 9:00 on Tuesday. Seeded, so every policy
 * replays exactly the same requests, and each history week differs from the measured one.
 */

export interface Visit {
  /** Request time, epoch ms. */
  readonly at: number
  readonly userId: string
  /** How long the user works before ending the session. */
  readonly durationMs: number
}

const MIN = 60_000
const HOUR = 60 * MIN
const DAY = 24 * HOUR

/** mulberry32: a small seeded PRNG. */
export function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function normal(r: () => number, mean: number, sd: number): number {
  const u = Math.max(1e-9, r())
  return mean + sd * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r())
}

/**
 * One week from `monday` (epoch ms of Monday 00:00 local; the week is chosen without a DST change,
 * so local hours are `monday + h`). 60 regular users: on a weekday each comes with probability 0.85
 * around 9:00 (σ 40 min), works 2–3.5 h, ends for lunch and comes back after it with probability 0.7
 * (13:00–14:30, 1.5–3.5 h); one in ten also works an hour in the evening. Weekends: a few users,
 * 10:00–17:00. Tuesday 9:00: 40 students arrive within a few minutes (σ 90 s) for 90 minutes.
 */
export function makeWeek(monday: number, seed: number): Visit[] {
  const r = rng(seed)
  const out: Visit[] = []
  const users = Array.from({ length: 60 }, (_, i) => `staff${i + 1}`)
  for (let day = 0; day < 7; day++) {
    const d0 = monday + day * DAY
    for (const u of users) {
      if (day >= 5) {
        if (r() < 0.05) out.push({ at: d0 + 10 * HOUR + r() * 7 * HOUR, userId: u, durationMs: (0.5 + r()) * HOUR })
        continue
      }
      if (r() > 0.85) continue
      const start = d0 + Math.max(7 * HOUR, normal(r, 9 * HOUR, 40 * MIN))
      const morning = (2 + r() * 1.5) * HOUR
      const lunchAt = Math.max(start + 30 * MIN, Math.min(start + morning, d0 + 12.5 * HOUR))
      out.push({ at: start, userId: u, durationMs: lunchAt - start })
      if (r() < 0.7) out.push({ at: d0 + 13 * HOUR + r() * 1.5 * HOUR, userId: u, durationMs: (1.5 + r() * 2) * HOUR })
      if (r() < 0.1) out.push({ at: d0 + 19 * HOUR + r() * 2 * HOUR, userId: u, durationMs: (0.5 + r()) * HOUR })
    }
    if (day === 1)
      for (let i = 0; i < 40; i++)
        out.push({ at: d0 + 9 * HOUR + normal(r, 0, 90_000), userId: `student${i + 1}`, durationMs: 90 * MIN })
  }
  return out.sort((a, b) => a.at - b.at)
}
