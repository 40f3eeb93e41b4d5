/**
 * What a measured phase of bench:api cost the server's thread, in figures that do not move with the
 * machine's load the way wall-clock latency does on a shared machine:
 *   - store statements executed (better-sqlite3 statement runs and pg queries, counted by wrapping
 *     their prototypes in this process: the server runs in it);
 *   - the main thread's CPU time (process.threadCpuUsage; the load client is a worker thread with its
 *     own CPU clock, so it is not counted);
 *   - with BENCH_PROFILE=<dir>, a CPU profile (.cpuprofile, for Chrome DevTools or speedscope) of the
 *     phase alone, through the inspector, so start-up and seeding stay out of it.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Session } from 'node:inspector/promises'
import BetterSqlite3 from 'better-sqlite3'
import pg from 'pg'

let statements = 0
/** With BENCH_STATEMENTS=1: statements counted by their SQL text (the first 120 characters). */
const TALLY = process.env.BENCH_STATEMENTS === '1'
const tally = new Map<string, number>()
const note = (sql: unknown) => {
  if (!TALLY) return
  const k = String(sql).replace(/\s+/g, ' ').slice(0, 120)
  tally.set(k, (tally.get(k) ?? 0) + 1)
}

/** Wraps the drivers' statement entry points once, so that every statement the store runs is counted. */
function countStatements(): void {
  const probe = new BetterSqlite3(':memory:')
  const proto = Object.getPrototypeOf(probe.prepare('select 1')) as Record<string, unknown>
  probe.close()
  for (const name of ['run', 'get', 'all', 'iterate']) {
    const orig = proto[name] as (...a: unknown[]) => unknown
    proto[name] = function (this: { source?: string }, ...a: unknown[]) {
      statements++
      note(this.source)
      return orig.apply(this, a)
    }
  }
  const q = pg.Client.prototype.query as (...a: unknown[]) => unknown
  ;(pg.Client.prototype as unknown as { query: unknown }).query = function (this: unknown, ...a: unknown[]) {
    statements++
    const first = a[0] as string | { text?: string } | undefined
    note(typeof first === 'string' ? first : first?.text)
    return q.apply(this, a)
  }
}
countStatements()

const PROFILE_DIR = process.env.BENCH_PROFILE

export interface PhaseCost {
  readonly statements: number
  /** Main-thread CPU, µs (user + system). */
  readonly cpuMicros: number
  readonly profile?: string
  /** With BENCH_STATEMENTS=1: the phase's statements by SQL text, most run first. */
  readonly byStatement?: readonly (readonly [string, number])[]
}

/** Starts measuring; `stop(name)` returns the phase's cost (and writes its profile when asked). */
export async function meter(): Promise<{ stop(name: string): Promise<PhaseCost> }> {
  let session: Session | undefined
  if (PROFILE_DIR) {
    session = new Session()
    session.connect()
    await session.post('Profiler.enable')
    await session.post('Profiler.setSamplingInterval', { interval: 200 })
    await session.post('Profiler.start')
  }
  const s0 = statements
  tally.clear()
  const c0 = process.threadCpuUsage()
  return {
    async stop(name) {
      const c1 = process.threadCpuUsage(c0)
      const byStatement = TALLY ? [...tally].sort((a, b) => b[1] - a[1]) : undefined
      const cost = { statements: statements - s0, cpuMicros: c1.user + c1.system, byStatement }
      if (!session || !PROFILE_DIR) return cost
      const { profile } = await session.post('Profiler.stop')
      session.disconnect()
      mkdirSync(PROFILE_DIR, { recursive: true })
      const file = join(PROFILE_DIR, `${name}.cpuprofile`)
      writeFileSync(file, JSON.stringify(profile))
      return { ...cost, profile: file }
    },
  }
}
