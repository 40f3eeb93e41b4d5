/**
 * npm run bench:reconcile — the worker's cycle time and provider calls per cycle with 2,000
 * instances on the fake provider, on SQLite and on Postgres (STUDIOPOOL_TEST_PG, default
 * postgres://127.0.0.1:5432/test, in a throw-away schema). Targets (issue 5): a cycle under 200 ms
 * and at most 2 list calls per cycle.
 *
 * Three phases per store: steady (nothing to do), churn (1% of the instances vanish each cycle and
 * are replaced under the same id), and idle (1% go idle each cycle and are culled).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import pg from 'pg'
import pino from 'pino'
import { loadConfig } from '../src/config/load.js'
import { newInstanceId } from '../src/domain/ids.js'
import { RouteHub } from '../src/gateway/route-hub.js'
import { PoolService } from '../src/pool/pool-service.js'
import { Worker } from '../src/pool/worker.js'
import { FakeProvider } from '../src/providers/fake/index.js'
import { LABEL_INSTANCE, LABEL_OWNER, LABEL_POOL, LABEL_TEMPLATE } from '../src/providers/provider.js'
import { pgClientConfig } from '../src/store/dialects.js'
import { createStoreFromUrl } from '../src/store/sql-store.js'
import type { Store } from '../src/store/store.js'

const N = Number(process.env.BENCH_INSTANCES ?? 2000)
const CYCLES = 15
/** BENCH_STORES=sqlite,postgres (the default: both). */
const STORES = (process.env.BENCH_STORES ?? 'sqlite,postgres').split(',').map((s) => s.trim())
const PG_URL = process.env.STUDIOPOOL_TEST_PG ?? 'postgres://127.0.0.1:5432/test'
const log = pino({ level: 'silent' })

const app = createServer((_q, r) => r.end('ok'))
await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
const appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}`

const yaml = `
pool: { id: bench, maxInstances: ${N + 100} }
worker: { orphanGrace: 10m }
templates:
  demo: { provider: fake, minFree: 10, maxInstances: ${N + 100}, idleTimeout: 1h, maxLifetime: 0, healthPath: / }
`

interface Row {
  store: string
  phase: string
  p50: number
  p90: number
  max: number
  list: number
  describe: number
  create: number
  destroy: number
}

async function seed(store: Store, provider: FakeProvider): Promise<void> {
  const now = Date.now()
  const chunk = 200
  for (let i = 0; i < N; i += chunk) {
    await store.transaction(async (tx) => {
      for (let j = i; j < Math.min(N, i + chunk); j++) {
        const id = newInstanceId()
        const owner = j < N - 10 ? `user${j}` : null
        const labels: Record<string, string> = { [LABEL_POOL]: 'bench', [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: 'demo' }
        if (owner) labels[LABEL_OWNER] = owner
        const res = await provider.create(
          {
            id,
            poolId: 'bench',
            template: { name: 'demo', settings: {} } as never,
            basePath: `/s/${id}/`,
            labels,
            progressUrl: '',
            progressToken: '',
            appToken: '',
            ownerId: null,
            sessionUrl: '',
          },
          { log },
        )
        await tx.insertInstance({
          id,
          template: 'demo',
          state: 'ready',
          ownerId: owner,
          keyName: owner ? 'bench' : null,
          providerRef: res.ref,
          address: appUrl,
          createdAt: now,
          updatedAt: now,
          startedAt: now,
          readyAt: now,
          assignedAt: owner ? now : null,
          lastActivityAt: owner ? now : null,
          progress: 100,
          progressMessage: 'ready',
        })
        if (owner)
          await tx.openAssignment({ instanceId: id, template: 'demo', userId: owner, keyName: 'bench', startedAt: now })
      }
    })
  }
}

async function run(storeName: string, url: string): Promise<Row[]> {
  const store = await createStoreFromUrl(url, { poolId: 'bench', poolSize: 10 })
  const config = loadConfig({ text: yaml, env: {}, cwd: tmpdir() })
  let clock = Date.now()
  const now = () => clock
  const provider = new FakeProvider({ poolId: 'bench', settings: { address: appUrl } }, { now })
  const providers = new Map([['fake', provider]])
  const pool = new PoolService({ config, store, providers, routes: new RouteHub(), log, now })
  const worker = new Worker({ config, store, pool, providers, log, now })
  const rows: Row[] = []
  try {
    await seed(store, provider)
    clock += config.worker.intervalMs
    await worker.runOnce() // warm-up (the first cycle records samples and opens every instance's cost segment)
    await pool.drain()

    const phase = async (name: string, before: () => Promise<void> | void) => {
      const times: number[] = []
      const calls = { list: 0, describe: 0, create: 0, destroy: 0 }
      for (let c = 0; c < CYCLES; c++) {
        // Time moves between cycles as it does for a running worker (its interval): a frozen clock
        // made every instance's cost accrual look new in every cycle (no running time to accrue yet).
        clock += config.worker.intervalMs
        await before()
        provider.resetCalls()
        const t0 = performance.now()
        const report = await worker.runOnce()
        times.push(performance.now() - t0)
        if (!report) throw new Error('the worker did not lead')
        await pool.drain() // background work the cycle started (creates, destroys) counts toward it
        calls.list = Math.max(calls.list, provider.calls.list)
        calls.describe = Math.max(calls.describe, provider.calls.describe)
        calls.create = Math.max(calls.create, provider.calls.create)
        calls.destroy = Math.max(calls.destroy, provider.calls.destroy)
      }
      times.sort((a, b) => a - b)
      rows.push({
        store: storeName,
        phase: name,
        p50: times[Math.floor(times.length / 2)]!,
        p90: times[Math.floor(times.length * 0.9)]!,
        max: times[times.length - 1]!,
        ...calls,
      })
    }

    await phase('steady', () => {})
    await phase('churn 1%/cycle', () => {
      const live = provider.instances().filter((r) => r.state === 'running')
      for (let i = 0; i < N / 100; i++) provider.vanish(live[(i * 97) % live.length]!.ref)
    })
    await phase('idle 1%/cycle', async () => {
      const ids = (await store.listInstances({ assigned: true, states: ['ready'], limit: N / 100 })).map((i) => i.id)
      for (const id of ids)
        await store.updateInstance(id, {
          lastActivityAt: clock - 2 * 3_600_000,
          assignedAt: clock - 2 * 3_600_000,
          readyAt: clock - 2 * 3_600_000,
        })
    })
    clock += 1
  } finally {
    await pool.close()
    await store.close()
  }
  return rows
}

const rows: Row[] = []
const dir = mkdtempSync(join(tmpdir(), 'sp-bench-reconcile-'))
try {
  if (STORES.includes('sqlite')) rows.push(...(await run('sqlite', `sqlite:${join(dir, 'bench.db')}`)))
  if (STORES.includes('postgres')) rows.push(...(await runPostgres()))
} finally {
  rmSync(dir, { recursive: true, force: true })
  app.close()
}

async function runPostgres(): Promise<Row[]> {
  const schema = `sp_bench_${randomBytes(4).toString('hex')}`
  const admin = new pg.Client(pgClientConfig(PG_URL))
  await admin.connect()
  await admin.query(`create schema "${schema}"`)
  try {
    const u = new URL(PG_URL)
    u.searchParams.set('options', `-c search_path=${schema}`)
    return await run('postgres', u.toString())
  } finally {
    await admin.query(`drop schema "${schema}" cascade`)
    await admin.end()
  }
}

console.log(
  `\nworker cycle with ${N} instances on the fake provider (${CYCLES} cycles per phase; calls are the most in any one cycle)\n`,
)
console.log('store     phase            p50 ms   p90 ms   max ms   list  describe  create  destroy')
for (const r of rows) {
  console.log(
    `${r.store.padEnd(9)} ${r.phase.padEnd(15)} ${r.p50.toFixed(1).padStart(7)} ${r.p90.toFixed(1).padStart(8)} ${r.max.toFixed(1).padStart(8)} ${String(r.list).padStart(6)} ${String(r.describe).padStart(9)} ${String(r.create).padStart(7)} ${String(r.destroy).padStart(8)}`,
  )
}
const worst = Math.max(...rows.map((r) => r.p90))
const lists = Math.max(...rows.map((r) => r.list))
console.log(
  `\ntarget: cycle < 200 ms → worst p90 ${worst.toFixed(1)} ms (worst single cycle ${Math.max(...rows.map((r) => r.max)).toFixed(1)} ms): ${worst < 200 ? 'PASS' : 'MISS'}`,
)
console.log(`target: ≤ 2 list calls per cycle → ${lists}: ${lists <= 2 ? 'PASS' : 'MISS'}`)
