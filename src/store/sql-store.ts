/**
 * The Store (store.ts) over Kysely, for SQLite (better-sqlite3, embedded default) and Postgres (pg).
 * What differs between them (transactions and the pool lock, the warm claim, activity writes,
 * leader election, migration details) is behind StoreAdapter (adapter.ts), implemented in
 * sqlite/sqlite-adapter.ts and postgres/postgres-adapter.ts; the operations (sql-ops.ts) and this
 * file are the same Kysely code for both.
 */
import type { RateDecision } from '../domain/rate-limit.js'
import { sql } from 'kysely'
import { Migrator } from 'kysely'
import pino from 'pino'
import type { Logger } from 'pino'
import type {
  InstanceWatch,
  InstanceWatcher,
  Store,
  StoreHealth,
  StoreTx,
  WarmClaimInput,
  WarmClaimResult,
} from './store.js'
import { runFenced } from './fence.js'
import { KNOWN_MIGRATIONS } from './migrations/index.js'
import { StartupRefusedError } from '../domain/errors.js'
import type { StoreAdapter } from './adapter.js'
import type { StoreConfig } from './dialects.js'
import { migrationProvider } from './migrations/index.js'
import { guardStore } from './store-guard.js'
import { refuseEmptyInUse, writeMarker } from './store-check.js'
import { existsSync, statSync } from 'node:fs'
import { SqlOps, type Shared } from './sql-ops.js'
import { webhookStore, type WebhookStore } from './webhook-ops.js'
import { sharedUsageStore, type SharedUsageStore } from './shared-usage-ops.js'
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
  /**
   * `auto` (default): apply pending migrations at open. `check`: apply none, and refuse to open a
   * store with pending ones (run `studiopool migrate` first; ha.autoMigrate: false). `none`: apply
   * none and open anyway (`studiopool migrate` itself).
   */
  readonly migrate?: 'auto' | 'check' | 'none'
  /**
   * SQLite: WAL checkpoints on a worker thread instead of inside the commit that fills the WAL
   * (sqlite/checkpointer.ts). Default: with `dataDir`, i.e. the server's store.
   */
  readonly backgroundCheckpoints?: boolean
  /** How long a silent worker leader keeps the lock, ms (ha.leaderTimeout; Postgres). */
  readonly leaderTimeoutMs?: number
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
      ? openSqlite(cfg.path, {
          integrityCheck: dataDir !== undefined,
          backgroundCheckpoints: opts.backgroundCheckpoints ?? dataDir !== undefined,
          log: opts.log,
        })
      : openPostgres({
          url: cfg.url,
          poolSize: cfg.poolSize,
          log: opts.log,
          poolId: opts.poolId,
          timeouts: cfg.timeouts,
          leaderTimeoutMs: opts.leaderTimeoutMs,
        })
  const store = new SqlStore(adapter, opts)
  try {
    const empty = await store.isEmpty()
    if (refuseEmpty && empty) refuseEmptyInUse(cfg, dataDir, 'empty (no studiopool tables)')
    if (!empty) await refuseNewerSchema(store)
    if (opts.migrate === 'check' && !empty) await refusePending(store)
    else if (opts.migrate !== 'none') await store.migrate()
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

/**
 * A replica whose code is older than the store's schema refuses to start (issue 16): it would not
 * know what the newer migrations changed. Exit 2, with what to do.
 */
async function refuseNewerSchema(store: SqlStore): Promise<void> {
  const unknown = await store.unknownMigrations()
  if (unknown.length === 0) return
  throw new StartupRefusedError(
    `studiopool: refusing to start: the store's schema is newer than this release. It has migration(s) ${unknown.join(', ')}, which this release (migrations up to ${KNOWN_MIGRATIONS.at(-1)}) does not know. Run the release that applied them (or a newer one) on this replica; see docs/ha.md "Upgrades".`,
  )
}

/** store.autoMigrate: false: pending migrations are applied by `studiopool migrate`, not by a replica starting. */
async function refusePending(store: SqlStore): Promise<void> {
  const pending = await store.pendingMigrations()
  if (pending.length === 0) return
  throw new StartupRefusedError(
    `studiopool: refusing to start: the store needs migration(s) ${pending.join(', ')} and ha.autoMigrate is false. Run \`studiopool migrate\` with this release first; see docs/ha.md "Upgrades".`,
  )
}

class SqlStore extends SqlOps implements Store {
  readonly #adapter: StoreAdapter
  readonly #log: Logger
  readonly #nonces: { lastPurge: number }
  readonly #poolId: string
  #closed = false
  readonly webhooks: WebhookStore = webhookStore(() => this.#adapter.db)
  readonly sharedUsage: SharedUsageStore = sharedUsageStore(() => this.#adapter.db)

  constructor(adapter: StoreAdapter, opts: StoreOptions) {
    const nonces = { lastPurge: 0 }
    const poolId = opts.poolId
    super(adapter.db, { adapter, nonces, poolId, inTransaction: (fn) => this.#begin((_ops, db) => fn(db)) })
    this.#adapter = adapter
    this.#nonces = nonces
    this.#poolId = poolId
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
      const inner: Shared = {
        adapter: this.#adapter,
        nonces: this.#nonces,
        poolId: this.#poolId,
        inTransaction: (f) => f(db),
      }
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

  /** Names of the migrations the store has applied (none on a new store). */
  async #applied(): Promise<string[]> {
    if (await this.#adapter.isEmpty()) return []
    const r = await sql<{ name: string }>`select name from studiopool_migration order by name`.execute(this.#adapter.db)
    return r.rows.map((x) => x.name)
  }

  async unknownMigrations(): Promise<string[]> {
    const known = new Set(KNOWN_MIGRATIONS)
    return (await this.#applied()).filter((n) => !known.has(n))
  }

  async pendingMigrations(): Promise<string[]> {
    const applied = new Set(await this.#applied())
    return KNOWN_MIGRATIONS.filter((n) => !applied.has(n))
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
    let { error, results } = await migrator.migrateToLatest()
    // Kysely looks for its tables across every schema of the database; another pool's schema
    // dropped at that moment fails the look-up ("schema … does not exist", 3F000) before any
    // migration ran. That is not ours: look again.
    for (let i = 0; i < 3 && !results?.length && (error as { code?: string } | undefined)?.code === '3F000'; i++)
      ({ error, results } = await migrator.migrateToLatest())
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

  takeRateToken(key: string, rate: number, burst: number, now: number): Promise<RateDecision> {
    return this.#adapter.takeRateToken(key, rate, burst, now)
  }

  fenced<T>(fn: () => Promise<T>): Promise<T> {
    const epoch = this.#adapter.leaderEpoch()
    return epoch === undefined ? fn() : runFenced(epoch, fn)
  }

  leaderEpoch(): number | undefined {
    return this.#adapter.leaderEpoch()
  }

  watchInstances(watcher: InstanceWatcher): InstanceWatch | undefined {
    return this.#adapter.watchInstances(watcher)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#adapter.close()
  }
}
