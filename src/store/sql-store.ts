/**
 * The Store (store.ts) over Kysely, for SQLite (better-sqlite3, embedded default) and Postgres (pg).
 * What differs between them (transactions and the pool lock, the warm claim, activity writes,
 * leader election, migration details) is behind StoreAdapter (adapter.ts), implemented in
 * sqlite/sqlite-adapter.ts and postgres/postgres-adapter.ts; the operations (sql-ops.ts) and this
 * file are the same Kysely code for both.
 */
import { sql } from 'kysely'
import { Migrator } from 'kysely'
import pino from 'pino'
import type { Logger } from 'pino'
import type { Store, StoreHealth, StoreTx, WarmClaimInput, WarmClaimResult } from './store.js'
import type { StoreAdapter } from './adapter.js'
import type { StoreConfig } from './dialects.js'
import { migrationProvider } from './migrations/index.js'
import { guardStore } from './store-guard.js'
import { refuseEmptyInUse, writeMarker } from './store-check.js'
import { existsSync, statSync } from 'node:fs'
import { SqlOps, type Shared } from './sql-ops.js'
import { translateInstanceError, type Db } from './rows.js'
import { openSqlite } from './sqlite/sqlite-adapter.js'
import { openPostgres } from './postgres/postgres-adapter.js'

export type { StoreConfig } from './dialects.js'

export interface StoreOptions {
  readonly log: Logger
  /** Pool id (config.pool.id): the advisory-lock keys derive from it. */
  readonly poolId: string
  /**
   * The server's data directory. When given, the store refuses to start empty or damaged where
   * the directory shows it was in use, and records that it is in use (store-check.ts).
   */
  readonly dataDir?: string
  /** Skip the empty-store refusal (still writes the marker): for a command that rebuilds an emptied store on purpose (`recover`). */
  readonly allowEmptyInUse?: boolean
}

/** Opens the store, runs pending migrations and returns it. Call `close()` when done. */
export async function createStore(cfg: StoreConfig, opts: StoreOptions): Promise<Store> {
  const dataDir = opts.dataDir
  const refuseEmpty = dataDir !== undefined && !opts.allowEmptyInUse
  if (refuseEmpty && cfg.driver === 'sqlite' && cfg.path !== ':memory:' && !cfg.path.startsWith('file:')) {
    // Before opening, which would create the file.
    if (!existsSync(cfg.path)) refuseEmptyInUse(cfg, dataDir, 'missing')
    else if (statSync(cfg.path).size === 0) refuseEmptyInUse(cfg, dataDir, 'empty (0 bytes)')
  }
  const adapter =
    cfg.driver === 'sqlite'
      ? openSqlite(cfg.path, { integrityCheck: dataDir !== undefined })
      : openPostgres({
          url: cfg.url,
          poolSize: cfg.poolSize,
          log: opts.log,
          poolId: opts.poolId,
          timeouts: cfg.timeouts,
        })
  const store = new SqlStore(adapter, opts)
  try {
    if (refuseEmpty && (await store.isEmpty())) refuseEmptyInUse(cfg, dataDir, 'empty (no studiopool tables)')
    await store.migrate()
    if (dataDir) writeMarker(cfg, dataDir)
  } catch (err) {
    await store.close().catch(() => {})
    throw err
  }
  return guardStore(store, { log: opts.log })
}

/**
 * For tests, benches and scripts: `sqlite:/abs/path.db`, `sqlite:relative.db`, `sqlite::memory:`
 * or a `postgres://` / `postgresql://` URL.
 */
export async function createStoreFromUrl(
  url: string,
  opts: Partial<StoreOptions> & { poolSize?: number } = {},
): Promise<Store> {
  const full: StoreOptions = { log: opts.log ?? pino({ level: 'silent' }), poolId: opts.poolId ?? 'default' }
  if (url.startsWith('sqlite:')) return createStore({ driver: 'sqlite', path: url.slice('sqlite:'.length) }, full)
  if (/^postgres(ql)?:\/\//.test(url))
    return createStore({ driver: 'postgres', url, poolSize: opts.poolSize ?? 10 }, full)
  throw new Error(`unsupported store URL (want sqlite:PATH or postgres://…): ${url.replace(/\/\/[^@/]*@/, '//***@')}`)
}

class SqlStore extends SqlOps implements Store {
  readonly #adapter: StoreAdapter
  readonly #log: Logger
  readonly #nonces: { lastPurge: number }
  #closed = false

  constructor(adapter: StoreAdapter, opts: StoreOptions) {
    const nonces = { lastPurge: 0 }
    super(adapter.db, { adapter, nonces, inTransaction: (fn) => this.#begin((_ops, db) => fn(db)) })
    this.#adapter = adapter
    this.#nonces = nonces
    this.#log = opts.log
  }

  /** For diagnostics and tests only: code outside src/store/ never reads it (eslint.config.js). */
  get dialect(): 'sqlite' | 'postgres' {
    return this.#adapter.dialect
  }

  /**
   * A new transaction whose ops run their own "transactional" methods (recordActivity) inline.
   * Inside fn, use only the ops passed in: on SQLite, calling the store itself would wait for the
   * connection this transaction holds.
   */
  #begin<T>(fn: (ops: SqlOps, db: Db) => Promise<T>, poolLock = false): Promise<T> {
    return this.#adapter.transaction((db) => {
      const inner: Shared = { adapter: this.#adapter, nonces: this.#nonces, inTransaction: (f) => f(db) }
      return fn(new SqlOps(db, inner), db)
    }, poolLock)
  }

  async claimWarm(claim: WarmClaimInput, now: number): Promise<WarmClaimResult> {
    try {
      return await this.#adapter.claimWarm(claim, now)
    } catch (err) {
      translateInstanceError(err)
    }
  }

  async assignWarm(claims: readonly WarmClaimInput[], now: number): Promise<WarmClaimResult[]> {
    try {
      return await this.#adapter.assignWarm(claims, now)
    } catch (err) {
      translateInstanceError(err)
    }
  }

  async migrate(): Promise<void> {
    const migrator = new Migrator({
      db: this.#adapter.db,
      provider: migrationProvider(this.#adapter.migrations),
      migrationTableSchema: await this.#adapter.migrationTableSchema(),
      migrationTableName: 'studiopool_migration',
      migrationLockTableName: 'studiopool_migration_lock',
    })
    // Postgres: Kysely runs the migrations in one transaction under pg_advisory_xact_lock, so two
    // replicas starting at once apply each migration once. SQLite: one connection, one process.
    const { error, results } = await migrator.migrateToLatest()
    for (const r of results ?? []) {
      if (r.status === 'Success') this.#log.info({ migration: r.migrationName }, 'store migration applied')
      else if (r.status === 'Error') this.#log.error({ migration: r.migrationName }, 'store migration failed')
    }
    if (error) throw error instanceof Error ? error : new Error(`store migration failed: ${String(error)}`)
  }

  async ping(): Promise<void> {
    await sql`select 1`.execute(this.#adapter.db)
  }

  /** True when no studiopool table exists yet (a new store, or an emptied one). */
  isEmpty(): Promise<boolean> {
    return this.#adapter.isEmpty()
  }

  async probeWrite(now: number): Promise<void> {
    await this.setMeta('readyz.probe', String(now))
  }

  health(): StoreHealth {
    // Filled in by the guard (store-guard.ts), which sees every call.
    return {}
  }

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.#begin(fn)
  }

  withPoolLock<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.#begin(fn, true)
  }

  tryLead(): Promise<boolean> {
    return this.#adapter.tryLead()
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#adapter.close()
  }
}
