/**
 * npm run bench:cost — a simulated week (bench/cost-week.ts) replayed through the real pool engine,
 * worker and SQLite store with the fake provider and a simulated clock, once per warm-pool policy:
 * static `MIN_FREE_INSTANCES=3` (the seed), schedules, predictive, predictive + schedules (issue 13).
 * Prints the warm-hit rate, the p95 wait for a session, idle instance-hours and cost per policy.
 * Target: ≥ 95 % warm hits with ≤ 50 % of the seed's idle instance-hours.
 * BENCH_POLICY=<prefix> runs one policy, BENCH_DAYS=<n> a shorter week, BENCH_DEBUG=1 prints where time went.
 *
 * The clock: PoolCore's and the worker's `now` read the simulated time; the loop jumps from event to
 * event (a request, a session's end, a create finishing, a worker cycle every 60 s) and, after each,
 * lets the engine settle (every create it started is registered, every started instance probed)
 * before the clock moves on. Instances take 20–60 s to start: the fake provider's create resolves
 * when the simulated clock reaches its due time, so they sit `provisioning` meanwhile, as on a cloud.
 * Two weeks of history (other seeds of the same generator) are written to the store first, so the
 * forecast has its lookback.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import { loadConfig } from '../src/config/load.js'
import { FREE_STATES } from '../src/domain/instance.js'
import { newInstanceId } from '../src/domain/ids.js'
import { RouteHub } from '../src/gateway/route-hub.js'
import { PoolService } from '../src/pool/pool-service.js'
import { Worker } from '../src/pool/worker.js'
import { FakeProvider } from '../src/providers/fake/index.js'
import type { InstanceSpec, OperationOptions, ProviderInstance } from '../src/providers/provider.js'
import { createStoreFromUrl } from '../src/store/sql-store.js'
import type { Store } from '../src/store/store.js'
import { makeWeek, rng, type Visit } from './cost-week.js'

const MIN = 60_000
const HOUR = 60 * MIN
const WEEK = 7 * 24 * HOUR
/** Monday 2026-01-12 00:00 in Europe/Berlin (CET, UTC+1): no DST change in the simulated weeks. */
const MONDAY = Date.parse('2026-01-11T23:00:00Z')
const TICK = 60_000
const PRICE = 0.4 // per instance-hour

const common = `
pool: { id: bench, maxInstances: 300 }
worker: { interval: 60s, retainEnded: 1h }
templates:
  lab:
    provider: fake
    maxInstances: 120
    idleTimeout: 0
    maxLifetime: 0
    startTimeout: 5m
    pricePerHour: ${PRICE}
    healthPath: /
`
/** Windows an operator who knows the timetable would write: office hours, the Tuesday class, quiet evenings. */
const officeWindows = (floor: number) => `
      timezone: Europe/Berlin
      windows:
        - { days: tue, from: '08:50', to: '09:10', minFree: 40 }
        - { days: mon-fri, from: '08:00', to: '18:00', minFree: ${floor} }
        - { days: mon-fri, from: '18:00', to: '22:00', minFree: ${Math.min(floor, 1)} }
      outside: { minFree: 0 }`

const POLICIES: { name: string; yaml: string }[] = [
  { name: 'static minFree 3 (seed)', yaml: `${common}    minFree: 3\n` },
  { name: 'schedules', yaml: `${common}    minFree: 0\n    schedule:${officeWindows(3)}\n` },
  {
    name: 'predictive',
    yaml: `${common}    minFree: 0\n    warmPool: { mode: predictive, targetHitRate: 0.95, lookback: 14d, timezone: Europe/Berlin }\n`,
  },
  {
    name: 'predictive + schedules',
    yaml: `${common}    minFree: 0\n    warmPool: { mode: predictive, targetHitRate: 0.95, lookback: 14d }\n    schedule:${officeWindows(1)}\n`,
  },
]

/** The simulated clock and the creates waiting for it. */
class Sim {
  now = MONDAY
  readonly #due: { at: number; id: string; resolve: () => void }[] = []
  readonly blocked = new Set<string>()

  until(at: number, id: string): Promise<void> {
    this.blocked.add(id)
    return new Promise((resolve) => this.#due.push({ at, id, resolve }))
  }

  nextDue(): number {
    return this.#due.reduce((m, d) => Math.min(m, d.at), Infinity)
  }

  release(): void {
    for (let i = this.#due.length - 1; i >= 0; i--) {
      const d = this.#due[i]!
      if (d.at > this.now) continue
      this.#due.splice(i, 1)
      this.blocked.delete(d.id)
      d.resolve()
    }
  }
}

/** The fake provider whose create takes a realistic start time of simulated clock (20–60 s). */
class SlowFake extends FakeProvider {
  readonly #sim: Sim
  readonly #r = rng(99)
  constructor(poolId: string, address: string, sim: Sim) {
    super({ poolId, settings: { address } }, { now: () => sim.now })
    this.#sim = sim
  }
  override async create(spec: InstanceSpec, opts: OperationOptions): Promise<ProviderInstance> {
    await this.#sim.until(this.#sim.now + 20_000 + this.#r() * 40_000, spec.id)
    return super.create(spec, opts)
  }
}

interface Outcome {
  readonly at: number
  readonly instanceId: string
  readonly outcome: string
  /** How long the user waited for a ready instance; undefined while it starts. */
  waitMs?: number
}

async function seedHistory(store: Store): Promise<void> {
  for (const [w, seed] of [
    [2, 101],
    [1, 102],
  ] as const)
    for (const v of makeWeek(MONDAY - w * WEEK, seed)) {
      const id = newInstanceId()
      await store.openAssignment({
        instanceId: id,
        template: 'lab',
        userId: v.userId,
        keyName: 'bench',
        startedAt: v.at,
      })
      await store.closeAssignment(id, v.at + v.durationMs, 'user', null)
    }
}

/** Waits until the engine is done with the current instant: creates registered, started instances probed. */
async function settle(store: Store, sim: Sim): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    await new Promise((r) => setImmediate(r))
    const rows = await store.listInstances({ states: ['provisioning', 'starting'] })
    if (rows.every((r) => r.state === 'provisioning' && sim.blocked.has(r.id))) {
      // Twice in a row: a background top-up may still be about to insert.
      if (i % 2 === 1) return
    } else await new Promise((r) => setTimeout(r, 1))
  }
  throw new Error('the engine did not settle')
}

async function runPolicy(policy: { name: string; yaml: string }, week: readonly Visit[], appUrl: string) {
  const dir = mkdtempSync(join(tmpdir(), 'sp-bench-cost-'))
  const store = await createStoreFromUrl(`sqlite:${join(dir, 'bench.db')}`, { poolId: 'bench' })
  await store.migrate()
  await seedHistory(store)
  const sim = new Sim()
  const config = loadConfig({ text: policy.yaml, env: {}, cwd: dir })
  const log = pino({ level: 'silent' })
  const provider = new SlowFake(config.pool.id, appUrl, sim)
  const providers = new Map([['fake', provider]])
  const now = () => sim.now
  const pool = new PoolService({ config, store, providers, routes: new RouteHub(), log, now })
  const worker = new Worker({ config, store, pool, providers, log, now })

  const ends: { at: number; id: string }[] = []
  const outcomes: Outcome[] = []
  const waiting: Outcome[] = []
  let next = 0
  let nextTick = MONDAY
  let idleMs = 0
  let busyMs = 0
  const endOfWeek = MONDAY + Number(process.env.BENCH_DAYS ?? 7) * 24 * HOUR
  /** Wall time spent settling and in worker cycles (BENCH_DEBUG=1 prints it, with the requests that were not warm hits). */
  const prof = { settle: 0, worker: 0 }
  const t0 = performance.now()
  while (sim.now < endOfWeek) {
    const free = await store.countInstances({ assigned: false, states: FREE_STATES })
    const assigned = await store.countInstances({ assigned: true, states: ['provisioning', 'starting', 'ready'] })
    const t = Math.min(
      week[next]?.at ?? Infinity,
      ends.reduce((m, e) => Math.min(m, e.at), Infinity),
      sim.nextDue(),
      nextTick,
      endOfWeek,
    )
    idleMs += free * (t - sim.now)
    busyMs += assigned * (t - sim.now)
    sim.now = t
    sim.release()
    let p0 = performance.now()
    await settle(store, sim)
    prof.settle += performance.now() - p0
    for (let i = ends.length - 1; i >= 0; i--)
      if (ends[i]!.at <= t) {
        await pool.release(ends[i]!.id, 'user')
        ends.splice(i, 1)
      }
    while (next < week.length && week[next]!.at <= t) {
      const v = week[next++]!

      const res = await pool.request({ userId: v.userId, template: 'lab', keyName: 'bench' })
      // A warm hit is a ready instance at once (the pool also hands out free ones still starting).
      const outcome = res.outcome === 'warm' && res.instance.state !== 'ready' ? 'claimed' : res.outcome
      const o: Outcome = { at: v.at, instanceId: res.instance.id, outcome }
      if (res.instance.state === 'ready') o.waitMs = 0
      else waiting.push(o)
      outcomes.push(o)

      ends.push({ at: v.at + v.durationMs, id: res.instance.id })
    }
    if (t >= nextTick) {
      p0 = performance.now()
      await worker.runOnce()
      prof.worker += performance.now() - p0
      nextTick += TICK
    }
    p0 = performance.now()
    await settle(store, sim)
    prof.settle += performance.now() - p0
    // Sessions that were not ready at once: their wait ends when the instance is ready.
    for (let i = waiting.length - 1; i >= 0; i--) {
      const w = waiting[i]!
      const row = await store.getInstance(w.instanceId)
      if (row?.readyAt === null || row?.readyAt === undefined) continue
      w.waitMs = Math.max(0, row.readyAt - w.at)
      waiting.splice(i, 1)
    }
  }
  const wallS = (performance.now() - t0) / 1000
  if (process.env.BENCH_DEBUG) {
    const kinds: Record<string, number> = {}
    for (const o of outcomes) kinds[o.outcome] = (kinds[o.outcome] ?? 0) + 1
    console.log(policy.name, JSON.stringify(kinds), JSON.stringify(prof))
    const fmt = new Intl.DateTimeFormat('en-GB', {
      timeZone: 'Europe/Berlin',
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
    })
    console.log(
      '  not warm:',
      outcomes
        .filter((o) => o.outcome !== 'warm')
        .map((o) => fmt.format(o.at))
        .join(', '),
    )
  }

  const waits: number[] = []
  let warm = 0
  for (const o of outcomes) {
    if (o.outcome === 'warm') warm++
    waits.push(o.waitMs ?? Infinity)
  }
  waits.sort((a, b) => a - b)
  const p95 = waits[Math.min(waits.length - 1, Math.floor(waits.length * 0.95))]!
  await worker.stop()
  await pool.close()
  await store.close()
  rmSync(dir, { recursive: true, force: true })
  const idleH = idleMs / HOUR
  const busyH = busyMs / HOUR
  return {
    policy: policy.name,
    requests: outcomes.length,
    hitRate: warm / outcomes.length,
    p95WaitS: p95 / 1000,
    idleH,
    busyH,
    idleCost: idleH * PRICE,
    cost: (idleH + busyH) * PRICE,
    wallS,
  }
}

const app = createServer((_q, r) => r.end('ok'))
await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
const appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}`
const week = makeWeek(MONDAY, 7)
const only = process.env.BENCH_POLICY
console.log(`bench:cost — one simulated week, ${week.length} session requests, template price ${PRICE}/h`)
const results = []
for (const p of POLICIES) {
  if (only && !p.name.startsWith(only)) continue
  const r = await runPolicy(p, week, appUrl)
  results.push(r)
  console.log(
    `${r.policy.padEnd(26)} warm hits ${(r.hitRate * 100).toFixed(1).padStart(5)} %  p95 wait ${r.p95WaitS.toFixed(0).padStart(3)} s  idle ${r.idleH.toFixed(1).padStart(6)} instance-h  assigned ${r.busyH.toFixed(1).padStart(6)} instance-h  cost ${r.cost.toFixed(2).padStart(7)} (idle ${r.idleCost.toFixed(2)})  [${r.wallS.toFixed(0)} s wall]`,
  )
}
const seed = results.find((r) => r.policy.startsWith('static'))
if (seed)
  for (const r of results.filter((x) => x !== seed)) {
    const ratio = r.idleH / seed.idleH
    const ok = r.hitRate >= 0.95 && ratio <= 0.5
    console.log(
      `${r.policy.padEnd(26)} idle vs seed ${(ratio * 100).toFixed(0)} %, warm hits ${(r.hitRate * 100).toFixed(1)} % → target (≥ 95 % hits, ≤ 50 % idle) ${ok ? 'met' : 'not met'}`,
    )
  }
app.close()
