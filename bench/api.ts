/**
 * `npm run bench:api` — the API's two hot calls on both stores (issue #2 "Must show"):
 *   - REQUEST_RSTUDIO warm hits: distinct new users, each handed a free `ready` instance;
 *   - GET_STATUS {} (the list of assigned instance ids; the seed's proxy polls it).
 * For SQLite (a file) and Postgres (a fresh schema at STUDIOPOOL_TEST_PG or postgres://127.0.0.1:5432/test),
 * with 1,000 and then 10,000 assigned instances in the store, the real server (start(): gateway in
 * front of Fastify, auth, validation, pool engine) on 127.0.0.1, 50 concurrent keep-alive clients.
 * Targets: warm-hit p99 < 20 ms; GET_STATUS list p99 < 50 ms with 10,000 instances.
 *
 * Warm hits are measured two ways in the same run, through the public API (issue 10):
 *   - `prefilled`: more free instances than the run claims and the worker off, so no top-up creates
 *     anything (each claim still calls the top-up, which finds the warm pool full);
 *   - `at minFree`: the template's free instances seeded at exactly its `minFree` (BENCH_TOPUP_MIN_FREE)
 *     and the worker on, as a pool runs in production: every claim leaves it one short, so the top-up
 *     creates one (fake provider, instant) and the pool probes it ready (a real HTTP stub).
 * Targets for both: warm-hit p99 ≤ 20 ms on Postgres, ≤ 10 ms on SQLite, at 50 clients. The closing
 * lines print the ratios measured in this run (Postgres / SQLite; at minFree / prefilled).
 *
 * Before measuring, BENCH_WARMUP warm hits (not measured) let V8 optimize the hot path, as it is in a
 * server that has run for a while.
 *
 * Env: BENCH_STORES=sqlite,postgres  BENCH_SIZES=1000,10000  BENCH_MODES=prefilled,minfree  BENCH_CONCURRENCY=50
 *      BENCH_WARM=5000  BENCH_WARMUP=2000  BENCH_LIST_MS=3000  BENCH_MIN_FREE=10  BENCH_TOPUP_MIN_FREE=500
 *      BENCH_PROFILE=<dir> (a CPU profile of each pass's measured warm hits)
 *      BENCH_STATEMENTS=1 (the measured warm hits' store statements by SQL text, per claim)
 *
 * Beside the latencies, each warm-hit row shows what a claim cost the server's thread, figures that a
 * loaded machine does not move much: store statements per claim (with its top-up, at minFree) and
 * main-thread CPU µs per claim (claim-meter.ts).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { Worker } from 'node:worker_threads'
import { loadConfig } from '../src/config/load.js'
import { newInstanceId } from '../src/domain/ids.js'
import { start, type Running } from '../src/main.js'
import { createStore } from '../src/store/sql-store.js'
import { pgClientConfig } from '../src/store/dialects.js'
import type { Store } from '../src/store/store.js'
import pg from 'pg'
import { meter } from './claim-meter.js'

const STORES = (process.env.BENCH_STORES ?? 'sqlite,postgres').split(',').map((s) => s.trim()) as (
  'sqlite' | 'postgres'
)[]
const SIZES = (process.env.BENCH_SIZES ?? '1000,10000').split(',').map(Number)
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 50)
const WARM = Number(process.env.BENCH_WARM ?? 5000)
/** Warm hits before the measured ones: V8 compiles the hot path to optimized code only after a few thousand calls. */
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2000)
const LIST_MS = Number(process.env.BENCH_LIST_MS ?? 3000)
/** Upper bound of the warm-hit phase, so the whole run stays under 3 minutes however slow the store is. */
const WARM_MAX_MS = 20_000
/** The template's warm-pool size; the prefilled free instances exceed it, so every top-up finds nothing to do. */
const MIN_FREE = Number(process.env.BENCH_MIN_FREE ?? 10)
const PG_URL = process.env.STUDIOPOOL_TEST_PG ?? 'postgres://127.0.0.1:5432/test'
const ARENA = 'bench-requester-key-0123456789'
const PROXY = 'bench-proxy-key-0123456789'
/** Warm-hit p99 targets per store, ms (issue 10). */
const TARGET_WARM_P99: Record<'sqlite' | 'postgres', number> = { sqlite: 10, postgres: 20 }
type Mode = 'prefilled' | 'minfree'
const MODES = (process.env.BENCH_MODES ?? 'prefilled,minfree').split(',').map((s) => s.trim()) as Mode[]
/** The `at minFree` pass: the template's minFree, and the free instances seeded (exactly that many). */
const TOPUP_MIN_FREE = Number(process.env.BENCH_TOPUP_MIN_FREE ?? 500)
const TARGET_LIST_P99 = 50
const log = pino({ level: 'silent' })

interface Result {
  readonly store: 'sqlite' | 'postgres'
  readonly mode: Mode
  readonly size: number
  readonly op: string
  readonly n: number
  readonly rps: number
  readonly p50: number
  readonly p99: number
  readonly max: number
  readonly note: string
  readonly target?: number
  /** Measured warm hits only: store statements and main-thread CPU per claim (claim-meter.ts). */
  readonly perClaim?: { readonly statements: number; readonly cpuMicros: number }
}

interface RunResult {
  n: number
  rps: number
  p50: number
  p99: number
  max: number
  errors: Map<string, number>
  /** With `raw`: every latency, ms, and the run's wall time, s. */
  lat?: number[]
  secs?: number
}

/** Runs combined into one distribution (the at-minFree rounds). */
function combine(runs: RunResult[]): RunResult {
  const lat = runs.flatMap((r) => r.lat ?? []).sort((a, b) => a - b)
  const secs = runs.reduce((t, r) => t + (r.secs ?? 0), 0)
  const pct = (p: number) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] ?? NaN
  const errors = new Map<string, number>()
  for (const r of runs) for (const [k, v] of r.errors) errors.set(k, (errors.get(k) ?? 0) + v)
  return { n: lat.length, rps: lat.length / secs, p50: pct(50), p99: pct(99), max: lat.at(-1) ?? NaN, errors }
}

/** The load client: a worker thread with its own event loop (and core), so latency is the server's. */
class LoadClient {
  readonly #w: Worker
  #seq = 0
  constructor(url: string) {
    this.#w = new Worker(new URL('./api-load-worker.mjs', import.meta.url), {
      workerData: { url, concurrency: CONCURRENCY },
    })
  }
  /** Closed loop: `CONCURRENCY` clients, each sending its next request as soon as the last answered. */
  run(job: {
    kind: 'warm' | 'status'
    key: string
    count?: number
    ms?: number
    sampleEvery?: number
    userPrefix?: string
    expectIds?: number
    raw?: boolean
  }) {
    const id = ++this.#seq
    return new Promise<RunResult>((resolve, reject) => {
      const onMsg = (m: {
        type: string
        id: number
        result: Omit<RunResult, 'errors'> & { errors: Record<string, number> }
      }) => {
        if (m.type !== 'result' || m.id !== id) return
        this.#w.off('message', onMsg)
        this.#w.off('error', reject)
        resolve({ ...m.result, errors: new Map(Object.entries(m.result.errors)) })
      }
      this.#w.on('message', onMsg)
      this.#w.once('error', reject)
      this.#w.postMessage({ type: 'run', id, job })
    })
  }
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#w.once('message', () => resolve())
      this.#w.postMessage({ type: 'close' })
    })
    await this.#w.terminate()
  }
}

/** Rows straight into the store (one transaction): `assigned` sessions of distinct users, `free` warm instances. */
async function seed(store: Store, assigned: number, free: number): Promise<void> {
  const now = Date.now()
  const base = {
    template: 'demo',
    state: 'ready' as const,
    providerRef: null,
    address: 'http://127.0.0.1:9',
    progress: 100,
    progressMessage: 'ready',
    createdAt: now - 3_600_000,
    updatedAt: now,
    startedAt: now - 3_600_000,
    readyAt: now - 3_500_000,
  }
  await store.transaction(async (tx) => {
    for (let i = 0; i < assigned; i++) {
      await tx.insertInstance({
        ...base,
        id: newInstanceId(),
        ownerId: `seeded-user-${i}`,
        keyName: 'arena',
        assignedAt: now - 60_000,
        lastActivityAt: now - 60_000,
      })
    }
    for (let i = 0; i < free; i++)
      await tx.insertInstance({
        ...base,
        id: newInstanceId(),
        ownerId: null,
        keyName: null,
        createdAt: now - 3_600_000 + i,
      })
  })
}

/** Waits (polling the store, no fixed sleep) until the pool's own top-ups made `n` free ready instances. */
async function warmPoolReady(store: Store, n: number): Promise<void> {
  const deadline = performance.now() + 300_000
  for (;;) {
    const ready = await store.countInstances({ template: 'demo', assigned: false, states: ['ready'], limit: n })
    if (ready >= n) return
    if (performance.now() > deadline) throw new Error(`the warm pool reached ${ready} of ${n} ready instances in 300 s`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

/** The app behind every fake instance in the `at minFree` pass: 200 to everything (the readiness probe). */
async function startAppStub(): Promise<{ url: string; readonly probes: number; close(): Promise<void> }> {
  let probes = 0
  const srv: Server = createServer((_req, res) => {
    probes++
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    get probes() {
      return probes
    },
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections()
        srv.close(() => r())
      }),
  }
}

async function pass(kind: 'sqlite' | 'postgres', size: number, mode: Mode): Promise<Result[]> {
  const dir = mkdtempSync(join(tmpdir(), `sp-bench-${kind}-`))
  const app = mode === 'minfree' ? await startAppStub() : undefined
  let admin: pg.Client | undefined
  let schema: string | undefined
  let running: Running | undefined
  try {
    let storeYaml: string
    if (kind === 'sqlite') storeYaml = `store: { driver: sqlite, path: ${JSON.stringify(join(dir, 'bench.db'))} }`
    else {
      admin = new pg.Client({ connectionString: pgClientConfig(PG_URL).connectionString })
      await admin.connect()
      schema = `sp_bench_${process.pid}_${size}_${mode}`
      await admin.query(`drop schema if exists "${schema}" cascade`)
      await admin.query(`create schema "${schema}"`)
      const u = new URL(PG_URL)
      u.searchParams.set('options', `-c search_path=${schema}`)
      storeYaml = `store: { driver: postgres, url: ${JSON.stringify(u.toString())}, poolSize: 20 }`
    }
    const minFree = mode === 'minfree' ? TOPUP_MIN_FREE : MIN_FREE
    const text = `${storeYaml}
worker: { enabled: ${mode === 'minfree'} }
pool: { maxInstances: 1000000 }
templates:
  demo:
    provider: fake
    minFree: ${minFree}
    maxInstances: 100000${app ? `\n    fake: { address: ${JSON.stringify(app.url)} }` : ''}
`
    const config = loadConfig({
      text,
      env: { ARENA_POOL_SERVICE_KEY: ARENA, PROXY_KEY: PROXY },
      cwd: dir,
      overrides: { port: 0, dataDir: dir, logLevel: 'silent' },
    })
    // Seed through the Store API before the server starts (the server publishes what it finds).
    const t0 = performance.now()
    const seedStore = await createStore(config.store, { log, poolId: config.pool.id })
    // At minFree nothing is seeded: rows the fake provider never created would be reconciled away by
    // the worker. The pool makes its warm pool itself (create + readiness probe), and the run waits for it.
    const seeded = mode === 'minfree' ? 0 : size + WARMUP + WARM + 200
    if (mode === 'prefilled') await seed(seedStore, size, seeded - size)
    await seedStore.close()

    running = await start({ config, log, onBootstrapKey: () => {} })
    if (mode === 'minfree') await warmPoolReady(running.store!, minFree)
    const seedMs = performance.now() - t0
    const client = new LoadClient(running.url)
    const out: Result[] = []
    try {
      // GET_STATUS (prefilled pass only) first, while the store holds exactly `size` assigned instances; 1 s unmeasured first (JIT).
      if (mode === 'prefilled') {
        await client.run({ kind: 'status', key: PROXY, ms: 1000, sampleEvery: 20 })
        const list = await client.run({ kind: 'status', key: PROXY, ms: LIST_MS, sampleEvery: 20, expectIds: size })
        out.push({
          store: kind,
          mode,
          size,
          op: 'GET_STATUS {} (proxy key)',
          ...list,
          note: `${size} ids per answer${fmtErrors(list.errors)}`,
          target: size >= 10_000 ? TARGET_LIST_P99 : undefined,
        })
        const listReq = await client.run({
          kind: 'status',
          key: ARENA,
          ms: Math.min(LIST_MS, 2000),
          sampleEvery: 20,
          expectIds: size,
        })
        out.push({
          store: kind,
          mode,
          size,
          op: 'GET_STATUS {} (requester key)',
          ...listReq,
          note: `${size} ids per answer${fmtErrors(listReq.errors)}`,
        })
      }

      // Warm hits: WARMUP unmeasured (JIT, key cache, connections), then WARM measured.
      // At minFree, rounds of at most minFree claims with the top-ups drained in between: however far
      // the top-ups fall behind during a round, every claim still finds a free instance (a warm hit,
      // not a cold start), and every claim leaves the pool short, so every one triggers a top-up.
      const rounds = async (total: number, userPrefix: string): Promise<RunResult> => {
        const per = mode === 'minfree' ? minFree : total
        const runs: RunResult[] = []
        for (let done = 0; done < total; done += per) {
          const count = Math.min(per, total - done)
          runs.push(
            await client.run({
              kind: 'warm',
              key: ARENA,
              count,
              ms: WARM_MAX_MS,
              userPrefix: `${userPrefix}${done}-`,
              raw: true,
            }),
          )
          await running!.pool!.drain()
          if (mode === 'minfree') await warmPoolReady(running!.store!, minFree)
        }
        return combine(runs)
      }
      // Warm hits: WARMUP unmeasured (JIT, key cache, connections), then WARM measured.
      await rounds(WARMUP, 'warmup-')
      const m = await meter()
      const probes0 = app?.probes ?? 0
      const warm = await rounds(WARM, 'bench-user-')
      const cost = await m.stop(`warm-${kind}-${mode}-${size}`)
      if (cost.profile) console.log(`  CPU profile of the measured warm hits: ${cost.profile}`)
      if (cost.byStatement)
        for (const [sql, n] of cost.byStatement.slice(0, 25))
          console.log(`  ${(n / WARM).toFixed(2).padStart(6)} per claim  ${sql}`)
      // What the top-ups did meanwhile: instances beyond those seeded were created by them.
      const total = await running.store!.countInstances({ template: 'demo' })
      const created = total - seeded
      out.unshift({
        store: kind,
        mode,
        size,
        op: 'REQUEST_RSTUDIO warm hit',
        ...warm,
        note: `${mode === 'minfree' ? `warm pool of ${minFree} made by the pool` : 'seeded'} in ${(seedMs / 1000).toFixed(1)} s; top-ups created ${created}${app ? `; ${((app.probes - probes0) / warm.n).toFixed(2)} readiness probes per claim` : ''}${fmtErrors(warm.errors)}`,
        target: TARGET_WARM_P99[kind],
        perClaim: { statements: cost.statements / warm.n, cpuMicros: cost.cpuMicros / warm.n },
      })
    } finally {
      await client.close()
    }
    return out
  } finally {
    await running?.close()
    await app?.close()
    if (admin) {
      if (schema) await admin.query(`drop schema if exists "${schema}" cascade`).catch(() => {})
      await admin.end()
    }
    rmSync(dir, { recursive: true, force: true })
  }
}

const fmtErrors = (e: Map<string, number>) =>
  e.size ? `; ERRORS: ${[...e].map(([k, v]) => `${v}× ${k}`).join(', ')}` : ''

const MODE_LABEL: Record<Mode, string> = { prefilled: 'prefilled', minfree: 'at minFree' }
const passes = (r: Result) => r.target !== undefined && r.p99 <= r.target && !r.note.includes('ERRORS')

/** The ratios this run measured: Postgres / SQLite per warm pool and size, at minFree / prefilled per store. */
function ratios(rows: Result[]): string[] {
  const warm = rows.filter((r) => r.op === 'REQUEST_RSTUDIO warm hit')
  const find = (store: string, mode: Mode, size: number) =>
    warm.find((r) => r.store === store && r.mode === mode && r.size === size)
  const out: string[] = []
  const fmt = (a: Result, b: Result) => `p99 ×${(a.p99 / b.p99).toFixed(2)}, req/s ×${(a.rps / b.rps).toFixed(2)}`
  for (const size of SIZES) {
    for (const mode of MODES) {
      const p = find('postgres', mode, size)
      const q = find('sqlite', mode, size)
      const where = mode === 'minfree' ? MODE_LABEL[mode] : `${size} assigned, ${MODE_LABEL[mode]}`
      if (p && q) out.push(`  ${where}: Postgres / SQLite ${fmt(p, q)}`)
    }
    for (const store of STORES) {
      const t = find(store, 'minfree', size)
      const f = find(store, 'prefilled', size)
      if (t && f) out.push(`  ${store}: at minFree / prefilled (${size} assigned) ${fmt(t, f)}`)
    }
  }
  return out
}

function table(rows: Result[]): string {
  const head = [
    'store',
    'warm pool',
    'instances',
    'operation',
    'requests',
    'req/s',
    'p50 ms',
    'p99 ms',
    'max ms',
    'target',
    'stmts/claim',
    'CPU µs/claim',
    'notes',
  ]
  const body = rows.map((r) => [
    r.store,
    MODE_LABEL[r.mode],
    r.mode === 'minfree' ? '-' : String(r.size),
    r.op,
    String(r.n),
    r.rps.toFixed(0),
    r.p50.toFixed(1),
    r.p99.toFixed(1),
    r.max.toFixed(1),
    r.target === undefined ? '' : `p99 ≤ ${r.target} ms: ${passes(r) ? 'PASS' : 'MISS'}`,
    r.perClaim ? r.perClaim.statements.toFixed(1) : '',
    r.perClaim ? r.perClaim.cpuMicros.toFixed(0) : '',
    r.note,
  ])
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => ((i >= 4 && i <= 8) || i === 10 || i === 11 ? c.padStart(w[i]!) : c.padEnd(w[i]!)))
      .join('  ')
      .trimEnd()
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...body.map(line)].join('\n')
}

const started = performance.now()
const results: Result[] = []
console.log(
  `studiopool API benchmark: ${CONCURRENCY} concurrent clients (undici Pool, keep-alive, in a worker thread), ${WARM} measured warm hits per pass after ${WARMUP} unmeasured, GET_STATUS for ${LIST_MS / 1000} s; Node ${process.version}`,
)
for (const size of SIZES) {
  for (const mode of MODES) {
    // At minFree the pool makes its own instances and none are seeded: one pass per store, with the first size.
    if (mode === 'minfree' && size !== SIZES[0]) continue
    for (const kind of STORES) {
      try {
        const r = await pass(kind, size, mode)
        results.push(...r)
        for (const x of r)
          console.log(
            `  ${kind} ${MODE_LABEL[mode]} ${size}: ${x.op}: ${x.rps.toFixed(0)} req/s, p50 ${x.p50.toFixed(1)} ms, p99 ${x.p99.toFixed(1)} ms${x.note.includes('ERRORS') ? ` ${x.note}` : ''}`,
          )
      } catch (err) {
        console.log(`  ${kind} ${MODE_LABEL[mode]} ${size}: FAILED: ${(err as Error).message}`)
        process.exitCode = 1
      }
    }
  }
}
console.log(`\n${table(results)}\n`)
const ratioLines = ratios(results)
if (ratioLines.length) console.log(`Measured in this run (warm hits):\n${ratioLines.join('\n')}\n`)
console.log(
  `Targets: REQUEST_RSTUDIO warm-hit p99 ≤ ${TARGET_WARM_P99.postgres} ms on Postgres, ≤ ${TARGET_WARM_P99.sqlite} ms on SQLite (prefilled and at minFree); GET_STATUS list p99 < ${TARGET_LIST_P99} ms with 10,000 instances.`,
)
console.log(`Total ${((performance.now() - started) / 1000).toFixed(1)} s`)
