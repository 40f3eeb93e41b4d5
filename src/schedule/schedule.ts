/**
 * Schedules (issue 13, docs/cost.md "Schedules"): per template, windows of wall-clock time in an IANA
 * time zone that set the warm pool's floor (`minFree`) and the cap (`maxInstances`), and what holds
 * outside them — other values, or `unavailable` (seed 003's Shiny app that runs 8:00–18:00 only).
 *
 * Pure: no I/O, no clock of its own (every function takes the instant), time zones through Intl only.
 * Wall-clock semantics, decided here once:
 * - a window is open while the local time is in [from, to) on one of its days; `to` ≤ `from` crosses
 *   midnight, and the part after midnight belongs to the day the window started on (`fri 22:00–02:00`
 *   is open Saturday 01:00); `to: '24:00'` is the end of the day;
 * - on the spring-forward night a start inside the skipped hour opens at the first instant whose
 *   local time is past it (02:30 in Europe/Berlin opens at 03:00 CEST); on the fall-back night a
 *   window covering the repeated hour is open for both (it lasts an hour longer, as a wall clock does).
 */

export const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const
export type Weekday = (typeof WEEKDAYS)[number]

export interface ScheduleWindow {
  /** Days the window starts on, 0 = Monday … 6 = Sunday. */
  readonly days: readonly number[]
  /** Minutes after local midnight, [0, 1440). */
  readonly fromMin: number
  /** Minutes after local midnight, (0, 1440]; ≤ fromMin crosses midnight. */
  readonly toMin: number
  readonly minFree: number
  readonly maxInstances: number
}

export interface ScheduleValues {
  readonly minFree: number
  readonly maxInstances: number
}

export interface Schedule {
  readonly timezone: string
  readonly windows: readonly ScheduleWindow[]
  /** Values outside every window, or `unavailable`: new sessions are refused and free instances removed. */
  readonly outside: ScheduleValues | 'unavailable'
}

/** What a schedule says for one instant. */
export interface ScheduleState {
  readonly open: boolean
  /** The window the instant is in (the first listed, when several overlap), else null. */
  readonly window: ScheduleWindow | null
  readonly available: boolean
  readonly minFree: number
  readonly maxInstances: number
}

export const DAYS_PATTERN =
  '^\\s*(daily|weekdays|weekends|((mon|tue|wed|thu|fri|sat|sun)(\\s*-\\s*(mon|tue|wed|thu|fri|sat|sun))?)(\\s*,\\s*(mon|tue|wed|thu|fri|sat|sun)(\\s*-\\s*(mon|tue|wed|thu|fri|sat|sun))?)*)\\s*$'
export const CLOCK_PATTERN = '^(([01]\\d|2[0-3]):[0-5]\\d|24:00)$'

/** `mon-fri`, `sat,sun`, `mon,wed-fri`, `daily`, `weekdays`, `weekends` → day numbers (0 = Monday); ranges wrap (`fri-mon`). */
export function parseDays(text: string): number[] {
  const s = text.trim().toLowerCase()
  if (s === 'daily') return [0, 1, 2, 3, 4, 5, 6]
  if (s === 'weekdays') return [0, 1, 2, 3, 4]
  if (s === 'weekends') return [5, 6]
  const out = new Set<number>()
  for (const part of s.split(',')) {
    const [a, b] = part.split('-').map((x) => WEEKDAYS.indexOf(x.trim() as Weekday))
    if (a === undefined || a < 0 || (b !== undefined && b < 0)) throw new Error(`not a day list: "${text}"`)
    const end = b ?? a
    for (let d = a; ; d = (d + 1) % 7) {
      out.add(d)
      if (d === end) break
    }
  }
  return [...out].sort((x, y) => x - y)
}

/** `08:30` → 510; `24:00` → 1440. */
export function parseClock(text: string): number {
  const m = /^(\d\d):(\d\d)$/.exec(text)
  if (!m) throw new Error(`not a time of day: "${text}"`)
  return Number(m[1]) * 60 + Number(m[2])
}

/** Whether Intl knows the time zone. */
export function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz })
    return true
  } catch {
    return false
  }
}

const formatters = new Map<string, Intl.DateTimeFormat>()
const DAY_INDEX: Record<string, number> = { Mon: 0, Tue: 1, Wed: 2, Thu: 3, Fri: 4, Sat: 5, Sun: 6 }

/** The local weekday (0 = Monday) and minute of the day of an instant in a time zone. */
export function localTime(at: number, timezone: string): { day: number; minute: number } {
  let f = formatters.get(timezone)
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: timezone,
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    })
    formatters.set(timezone, f)
  }
  let day = 0
  let hour = 0
  let minute = 0
  for (const p of f.formatToParts(at)) {
    if (p.type === 'weekday') day = DAY_INDEX[p.value] ?? 0
    else if (p.type === 'hour') hour = Number(p.value)
    else if (p.type === 'minute') minute = Number(p.value)
  }
  return { day, minute: hour * 60 + minute }
}

function inWindow(w: ScheduleWindow, day: number, minute: number): boolean {
  if (w.fromMin < w.toMin) return w.days.includes(day) && minute >= w.fromMin && minute < w.toMin
  // Crosses midnight: the evening part on a listed day, the morning part on the day after one.
  return (w.days.includes(day) && minute >= w.fromMin) || (w.days.includes((day + 6) % 7) && minute < w.toMin)
}

/** The window an instant is in, else null. */
export function windowAt(s: Schedule, at: number): ScheduleWindow | null {
  const { day, minute } = localTime(at, s.timezone)
  return s.windows.find((w) => inWindow(w, day, minute)) ?? null
}

/** What the schedule says at an instant. `fallback` is the template's own values (an `outside` absent). */
export function scheduleAt(s: Schedule, at: number): ScheduleState {
  const w = windowAt(s, at)
  if (w) return { open: true, window: w, available: true, minFree: w.minFree, maxInstances: w.maxInstances }
  if (s.outside === 'unavailable') return { open: false, window: null, available: false, minFree: 0, maxInstances: 0 }
  return { open: false, window: null, available: true, ...s.outside }
}

const MINUTE = 60_000

/** Wall-clock minutes from (day, minute) to the next start of any window, > 0. */
function minutesToNextStart(s: Schedule, day: number, minute: number): number {
  let best = Infinity
  for (const w of s.windows)
    for (let k = 0; k <= 7; k++) {
      if (!w.days.includes((day + k) % 7)) continue
      const delta = k * 1440 + w.fromMin - minute
      if (delta > 0 && delta < best) best = delta
    }
  return best
}

/**
 * The first instant at or after `at` (to the minute) at which a window is open; null when the
 * schedule has no windows. Jumps from one wall-clock start to the next and, where a DST change
 * lies between, finds the exact minute by bisection (the spring gap opens a window at 03:00).
 */
export function nextOpening(s: Schedule, at: number): number | null {
  if (!s.windows.length) return null
  let t = Math.ceil(at / MINUTE) * MINUTE
  if (windowAt(s, at)) return at
  for (let guard = 0; guard < 64; guard++) {
    if (windowAt(s, t)) return t
    const { day, minute } = localTime(t, s.timezone)
    const delta = minutesToNextStart(s, day, minute)
    if (!Number.isFinite(delta)) return null
    const next = t + delta * MINUTE
    if (windowAt(s, next)) {
      // The first open minute in (t, next]: a DST change in between moves it.
      return firstMinute(t, next, (m) => windowAt(s, m) !== null)
    }
    t = next
  }
  return null
}

/** The first instant at or after `at` (to the minute) at which no window is open; null when always open within a week. */
export function nextClosing(s: Schedule, at: number): number | null {
  if (!windowAt(s, at)) return at
  let t = Math.floor(at / MINUTE) * MINUTE
  // Step by 15 minutes (every DST shift and most windows are on quarter hours), then refine.
  for (let i = 0; i < 8 * 96; i++) {
    const next = t + 15 * MINUTE
    if (!windowAt(s, next)) {
      return firstMinute(t, next, (m) => windowAt(s, m) === null)
    }
    t = next
  }
  return null
}

/**
 * The values to keep now, warming ahead: a window that opens within `leadMs` (the template's measured
 * start time plus one worker cycle) already counts for the floor and the cap, so its instances are
 * ready when it opens; availability (new sessions) follows the instant itself.
 */
export function effectiveSchedule(s: Schedule, at: number, leadMs: number): ScheduleState {
  const now = scheduleAt(s, at)
  const ahead = scheduleAt(s, at + leadMs)
  let { minFree, maxInstances } = now
  if (ahead.open || !now.open) {
    minFree = Math.max(minFree, ahead.minFree)
    maxInstances = Math.max(maxInstances, ahead.maxInstances)
  }
  // A window opening inside the lead may also start between the two samples: look at the opening too.
  const opens = now.open ? null : nextOpening(s, at)
  if (opens !== null && opens - at <= leadMs) {
    const w = scheduleAt(s, opens)
    minFree = Math.max(minFree, w.minFree)
    maxInstances = Math.max(maxInstances, w.maxInstances)
  }
  return { ...now, minFree, maxInstances }
}

/** The first whole minute in (lo, hi] at which `holds` is true, by bisection: it is false at lo and true at hi. */
function firstMinute(lo: number, hi: number, holds: (at: number) => boolean): number {
  while (hi - lo > MINUTE) {
    const mid = lo + Math.floor((hi - lo) / MINUTE / 2) * MINUTE
    if (holds(mid)) hi = mid
    else lo = mid
  }
  return hi
}
