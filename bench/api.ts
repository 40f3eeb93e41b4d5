/**
 * `npm run bench:api` — the API's two hot calls on both stores (issue #2 "Must show"):
 *   - REQUEST_RSTUDIO warm hits: distinct new users, each handed a free `ready` instance;
 *   - GET_STATUS {} (the list of assigned instance ids; the seed's proxy polls it).
 * For SQLite (a file) and Postgres (a fresh schema at STUDIOPOOL_TEST_PG or postgres://127.0.0.1:5432/test),
 * with 1,000 and then 10,000 assigned instances in the store, the real server (start(): gateway in
 * front of Fastify, auth, validation, pool engine) on 127.0.0.1, 50 concurrent keep-alive clients.
 * Targets: warm-hit p99 < 20 ms; GET_STATUS list p99 < 50 ms with 10,000 instances.
 *
 * Before measuring, BENCH_WARMUP warm hits (not measured) let V8 optimize the hot path, as it is in a
 * server that has run for a while.
 *
 * Env: BENCH_STORES=sqlite,postgres  BENCH_SIZES=1000,10000  BENCH_CONCURRENCY=50  BENCH_WARM=5000  BENCH_WARMUP=2000  BENCH_LIST_MS=3000  BENCH_MIN_FREE=10
 */
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
const TARGET_WARM_P99 = 20
const TARGET_LIST_P99 = 50
const log = pino({ level: 'silent' })

interface Result {
  readonly store: string
  readonly size: number
  readonly op: string
  readonly n: number
  readonly rps: number
  readonly p50: number
  readonly p99: number
  readonly max: number
  readonly note: string
  readonly target?: number
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
  }) {
    const id = ++this.#seq
    return new Promise<{ n: number; rps: number; p50: number; p99: number; max: number; errors: Map<string, number> }>(
      (resolve, reject) => {
        const onMsg = (m: {
          type: string
          id: number
          result: { n: number; rps: number; p50: number; p99: number; max: number; errors: Record<string, number> }
        }) => {
          if (m.type !== 'result' || m.id !== id) return
          this.#w.off('message', onMsg)
          this.#w.off('error', reject)
          resolve({ ...m.result, errors: new Map(Object.entries(m.result.errors)) })
        }
        this.#w.on('message', onMsg)
        this.#w.once('error', reject)
        this.#w.postMessage({ type: 'run', id, job })
      },
    )
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

async function pass(kind: 'sqlite' | 'postgres', size: number): Promise<Result[]> {
  const dir = mkdtempSync(join(tmpdir(), `sp-bench-${kind}-`))
  let admin: pg.Client | undefined
  let schema: string | undefined
  let running: Running | undefined
  try {
    let storeYaml: string
    if (kind === 'sqlite') storeYaml = `store: { driver: sqlite, path: ${JSON.stringify(join(dir, 'bench.db'))} }`
    else {
      admin = new pg.Client({ connectionString: pgClientConfig(PG_URL).connectionString })
      await admin.connect()
      schema = `sp_bench_${process.pid}_${size}`
      await admin.query(`drop schema if exists "${schema}" cascade`)
      await admin.query(`create schema "${schema}"`)
      const u = new URL(PG_URL)
      u.searchParams.set('options', `-c search_path=${schema}`)
      storeYaml = `store: { driver: postgres, url: ${JSON.stringify(u.toString())}, poolSize: 20 }`
    }
    const text = `${storeYaml}
worker: { enabled: false }
pool: { maxInstances: 1000000 }
templates:
  demo:
    provider: fake
    minFree: ${MIN_FREE}
    maxInstances: 100000
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
    await seed(seedStore, size, WARMUP + WARM + 200)
    await seedStore.close()
    const seedMs = performance.now() - t0

    running = await start({ config, log, onBootstrapKey: () => {} })
    const client = new LoadClient(running.url)
    const out: Result[] = []
    try {
      // GET_STATUS first, while the store holds exactly `size` assigned instances; 1 s unmeasured first (JIT).
      await client.run({ kind: 'status', key: PROXY, ms: 1000, sampleEvery: 20 })
      const list = await client.run({ kind: 'status', key: PROXY, ms: LIST_MS, sampleEvery: 20, expectIds: size })
      out.push({
        store: kind,
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
        size,
        op: 'GET_STATUS {} (requester key)',
        ...listReq,
        note: `${size} ids per answer${fmtErrors(listReq.errors)}`,
      })

      // Warm hits: WARMUP unmeasured (JIT, key cache, connections), then WARM measured.
      await client.run({ kind: 'warm', key: ARENA, count: WARMUP, ms: WARM_MAX_MS, userPrefix: 'warmup-' })
      await running.pool!.drain()
      const warm = await client.run({
        kind: 'warm',
        key: ARENA,
        count: WARM,
        ms: WARM_MAX_MS,
        userPrefix: 'bench-user-',
      })
      await running.pool!.drain()
      out.unshift({
        store: kind,
        size,
        op: 'REQUEST_RSTUDIO warm hit',
        ...warm,
        note: `seeded in ${(seedMs / 1000).toFixed(1)} s${fmtErrors(warm.errors)}`,
        target: TARGET_WARM_P99,
      })
    } finally {
      await client.close()
    }
    return out
  } finally {
    await running?.close()
    if (admin) {
      if (schema) await admin.query(`drop schema if exists "${schema}" cascade`).catch(() => {})
      await admin.end()
    }
    rmSync(dir, { recursive: true, force: true })
  }
}

const fmtErrors = (e: Map<string, number>) =>
  e.size ? `; ERRORS: ${[...e].map(([k, v]) => `${v}× ${k}`).join(', ')}` : ''

function table(rows: Result[]): string {
  const head = ['store', 'instances', 'operation', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'target', 'notes']
  const body = rows.map((r) => [
    r.store,
    String(r.size),
    r.op,
    String(r.n),
    r.rps.toFixed(0),
    r.p50.toFixed(1),
    r.p99.toFixed(1),
    r.max.toFixed(1),
    r.target === undefined
      ? ''
      : `p99 < ${r.target} ms: ${r.p99 < r.target && !r.note.includes('ERRORS') ? 'PASS' : 'MISS'}`,
    r.note,
  ])
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i >= 3 && i <= 7 ? c.padStart(w[i]!) : c.padEnd(w[i]!)))
      .join('  ')
      .trimEnd()
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...body.map(line)].join('\n')
}

const started = performance.now()
const results: Result[] = []
console.log(
  `studiopool API benchmark: ${CONCURRENCY} concurrent clients (undici Pool, keep-alive, in a worker thread), ${WARM} measured warm hits per pass after ${WARMUP} unmeasured, GET_STATUS for ${LIST_MS / 1000} s; Node ${process.version}`,
)
for (const kind of STORES) {
  for (const size of SIZES) {
    try {
      const r = await pass(kind, size)
      results.push(...r)
      for (const x of r)
        console.log(
          `  ${kind} ${size}: ${x.op}: ${x.rps.toFixed(0)} req/s, p50 ${x.p50.toFixed(1)} ms, p99 ${x.p99.toFixed(1)} ms${x.note.includes('ERRORS') ? ` ${x.note}` : ''}`,
        )
    } catch (err) {
      console.log(`  ${kind} ${size}: FAILED: ${(err as Error).message}`)
      process.exitCode = 1
    }
  }
}
console.log(`\n${table(results)}\n`)
console.log(
  `Targets: REQUEST_RSTUDIO warm-hit p99 < ${TARGET_WARM_P99} ms; GET_STATUS list p99 < ${TARGET_LIST_P99} ms with 10,000 instances.`,
)
console.log(`Total ${((performance.now() - started) / 1000).toFixed(1)} s`)
