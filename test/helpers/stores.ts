/**
 * The stores a suite runs against: a real SQLite file and a real Postgres (a fresh schema per store,
 * dropped at the end). STORES=sqlite,postgres chooses; Postgres is never skipped silently: when it is
 * down the suite fails with a clear message unless STUDIOPOOL_SKIP_PG=1.
 */
import { after } from 'node:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { createStoreFromUrl } from '../../src/store/sql-store.js'
import { pgClientConfig } from '../../src/store/dialects.js'
import type { Store } from '../../src/store/store.js'

export const PG_URL = process.env.STUDIOPOOL_TEST_PG ?? 'postgres://127.0.0.1:5432/test'
const SKIP_PG = process.env.STUDIOPOOL_SKIP_PG === '1'
const wanted = (process.env.STORES ?? 'sqlite,postgres').split(',')

export interface TestStoreKind {
  readonly name: 'sqlite' | 'postgres'
  /** A fresh, empty store. */
  make(opts?: { poolId?: string; poolSize?: number }): Promise<Store>
  /** A URL for a fresh, empty database (for servers started from config). */
  freshUrl(): Promise<string>
}

const cleanups: (() => Promise<void> | void)[] = []
after(async () => {
  for (const c of cleanups.reverse()) await c()
})

const runId = `sp_t_${process.pid}_${randomBytes(3).toString('hex')}`
let schemaSeq = 0
let admin: pg.Client | undefined

async function pgAdmin(): Promise<pg.Client> {
  if (admin) return admin
  const c = new pg.Client({ ...pgClientConfig(PG_URL), connectionTimeoutMillis: 5000 })
  try {
    await c.connect()
  } catch (err) {
    throw new Error(
      `Postgres is not reachable at ${PG_URL}: ${(err as Error).message}. Start it, set STUDIOPOOL_TEST_PG, or STUDIOPOOL_SKIP_PG=1 to skip.`,
      { cause: err },
    )
  }
  admin = c
  cleanups.unshift(async () => {
    await c.end().catch(() => {})
  })
  return c
}

const sqlite: TestStoreKind = {
  name: 'sqlite',
  async freshUrl() {
    const dir = mkdtempSync(join(tmpdir(), 'sp-store-'))
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
    return `sqlite:${join(dir, 'studiopool.db')}`
  },
  async make(opts = {}) {
    const s = await createStoreFromUrl(await this.freshUrl(), { poolId: opts.poolId ?? 'test' })
    cleanups.push(() => s.close())
    return s
  },
}

const postgres: TestStoreKind = {
  name: 'postgres',
  async freshUrl() {
    const c = await pgAdmin()
    const schema = `${runId}_${++schemaSeq}`
    await c.query(`create schema "${schema}"`)
    cleanups.push(async () => {
      await c.query(`drop schema if exists "${schema}" cascade`).catch(() => {})
    })
    const u = new URL(PG_URL)
    u.searchParams.set('options', `-c search_path=${schema}`)
    return u.toString()
  },
  async make(opts = {}) {
    const s = await createStoreFromUrl(await this.freshUrl(), {
      poolId: opts.poolId ?? 'test',
      poolSize: opts.poolSize ?? 10,
    })
    cleanups.push(() => s.close())
    return s
  },
}

/** The store kinds this run tests (both unless STORES says otherwise or STUDIOPOOL_SKIP_PG=1). */
export const STORE_KINDS: readonly TestStoreKind[] = [sqlite, postgres].filter(
  (k) => wanted.includes(k.name) && !(k.name === 'postgres' && SKIP_PG),
)

/**
 * One fresh database of this kind, opened as often as a test restarts its server over it (a new
 * store each call, as a new process would have); every store opened is closed at the end of the file.
 */
export async function reopenable(kind: TestStoreKind, poolId = 'test'): Promise<() => Promise<Store>> {
  const url = await kind.freshUrl()
  return async () => {
    const s = await createStoreFromUrl(url, { poolId })
    cleanups.push(() => s.close().catch(() => {}))
    return s
  }
}
