/**
 * The SQLite side of the store (better-sqlite3, the embedded default).
 *
 * Kysely's SQLite driver has one connection behind a mutex, so a transaction excludes every other
 * statement of this process. Transactions open with `BEGIN IMMEDIATE` (taking the write lock up
 * front) so that another process on the same file waits on busy_timeout instead of failing a lock
 * upgrade half-way. SQLite is for one server process; use Postgres for replicas, so leading is
 * always ours. Warm claims run as one synchronous transaction of prepared statements, the claims of
 * one event-loop turn share it (warm-batcher.ts), and it runs ahead of queued statements (#runWarm).
 */
import { takeToken, type RateDecision } from '../../domain/rate-limit.js'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import BetterSqlite3 from 'better-sqlite3'
import { Kysely, SqliteDialect, sql, type SqliteDatabase, type SqliteStatement } from 'kysely'
import type { StoreAdapter } from '../adapter.js'
import type { MigrationDialect } from '../migrations/index.js'
import type { Db } from '../rows.js'
import { refuseDamaged } from '../store-check.js'
import type { WarmClaimInput, WarmClaimResult } from '../store.js'
import type { Database } from '../tables.js'
import { prepareWarmBatch, type WarmBatch } from './warm-claims.js'
import { plainParams } from './plain-params.js'
import { startCheckpointer, type Checkpointer } from './checkpointer.js'
import type { Logger } from 'pino'
import { WarmClaimBatcher, type TimedClaim } from '../warm-batcher.js'

/** How long a SQLite writer waits for another process's lock before SQLITE_BUSY, ms. */
const SQLITE_BUSY_TIMEOUT_MS = 5000

/** Statements kept per SQL text; the store issues a few dozen distinct ones. */
const STATEMENT_CACHE_MAX = 500

const MIGRATIONS: MigrationDialect = {
  serialPrimaryKey: (t, column) => t.addColumn(column, 'integer', (c) => c.primaryKey().autoIncrement()),
}

/** Opens (creating when absent) the SQLite file at `path`, or `:memory:` / a `file:` URI. */
export function openSqlite(
  path: string,
  opts: {
    integrityCheck?: boolean
    /** WAL checkpoints on a worker thread (checkpointer.ts): the server's store; a file path only. */
    backgroundCheckpoints?: boolean
    log?: Logger
  } = {},
): StoreAdapter {
  if (path !== ':memory:' && !path.startsWith('file:')) mkdirSync(dirname(path), { recursive: true })
  const database = new BetterSqlite3(path)
  try {
    // WAL: readers never block the writer; NORMAL is durable across process crashes in WAL mode.
    database.pragma('journal_mode = WAL')
    database.pragma('synchronous = NORMAL')
    database.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`)
    database.pragma('foreign_keys = ON')
    if (opts.integrityCheck) {
      // A garbage page in the middle used to start fine and then fail every worker cycle (issue 9 item 5).
      const rows = database.pragma('quick_check') as { quick_check: string }[]
      const problems = rows.map((r) => r.quick_check).filter((r) => r !== 'ok')
      if (problems.length) refuseDamaged(path, problems)
    }
  } catch (err) {
    database.close()
    const code = (err as { code?: unknown }).code
    if (code === 'SQLITE_NOTADB' || (typeof code === 'string' && code.startsWith('SQLITE_CORRUPT')))
      refuseDamaged(path, [(err as Error).message])
    throw err
  }
  const fileBacked = path !== ':memory:' && !path.startsWith('file:')
  const checkpointer =
    opts.backgroundCheckpoints && fileBacked
      ? startCheckpointer(path, database, {
          onError: (err) =>
            opts.log?.warn(
              { err: err.message },
              'the SQLite checkpoint thread stopped; checkpoints run on the main thread again',
            ),
        })
      : undefined
  return new SqliteAdapter(database, checkpointer)
}

/**
 * Kysely's SQLite driver prepares every query anew; preparing was a tenth of a warm hit's CPU.
 * better-sqlite3 statements are reusable and run synchronously, so one per SQL text is safe
 * (the store never streams rows). Bounded, since `IN (…)` lists of other lengths are other texts.
 * Parameters are bound as plain values (plain-params.ts), or SQLite would compile many of these
 * statements again on every run anyway.
 */
function withStatementCache(database: BetterSqlite3.Database): SqliteDatabase {
  const cache = new Map<string, BetterSqlite3.Statement>()
  return {
    close: () => database.close(),
    prepare: (sql: string) => {
      let stmt = cache.get(sql)
      if (!stmt) {
        stmt = database.prepare(plainParams(sql))
        if (cache.size < STATEMENT_CACHE_MAX) cache.set(sql, stmt)
      }
      return stmt as unknown as SqliteStatement
    },
  }
}

class SqliteAdapter implements StoreAdapter {
  readonly dialect = 'sqlite' as const
  readonly db: Kysely<Database>
  readonly migrations = MIGRATIONS
  readonly #raw: BetterSqlite3.Database
  readonly #batcher = new WarmClaimBatcher((claims) => this.#runWarm(claims))
  #warmBatch: WarmBatch | undefined

  readonly #checkpointer: Checkpointer | undefined

  constructor(database: BetterSqlite3.Database, checkpointer?: Checkpointer) {
    this.#raw = database
    this.#checkpointer = checkpointer
    this.db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(database) }) })
  }

  transaction<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    // Kysely's transaction() issues a plain BEGIN; we want BEGIN IMMEDIATE, so we drive the single
    // connection ourselves. connection() holds the driver's mutex for the whole block, which is
    // also the pool lock: nothing else of this process runs a statement meanwhile.
    return this.db.connection().execute(async (conn) => {
      await sql`begin immediate`.execute(conn)
      try {
        const result = await fn(conn)
        await sql`commit`.execute(conn)
        return result
      } catch (err) {
        try {
          await sql`rollback`.execute(conn)
        } catch {
          // SQLite may already have rolled back (e.g. after SQLITE_FULL); the original error matters.
        }
        throw err
      }
    })
  }

  claimWarm(claim: WarmClaimInput, now: number): Promise<WarmClaimResult> {
    return this.#batcher.claim(claim, now)
  }

  assignWarm(claims: readonly WarmClaimInput[], now: number): Promise<WarmClaimResult[]> {
    return this.#runWarm(claims.map((claim) => ({ claim, now })))
  }

  #runWarm(claims: readonly TimedClaim[]): Promise<WarmClaimResult[]> {
    const batch = (this.#warmBatch ??= prepareWarmBatch(this.#raw))
    // Ahead of the statements queued on Kysely's connection mutex (a top-up's provisioning and
    // readiness writes, a dozen per claim): the batch is one synchronous transaction, so whenever no
    // Kysely transaction is open on the connection nothing can interleave with it. Inside one (it
    // awaits between statements), wait for the mutex like everyone else: joining it would be wrong.
    if (!this.#raw.inTransaction) return new Promise((resolve) => resolve(batch.immediate(claims)))
    // Prepared statements skip building and compiling SQL.
    return this.db.connection().execute(async () => batch.immediate(claims))
  }

  async recordActivity(
    _db: Db,
    latest: ReadonlyMap<string, number>,
    inTransaction: (fn: (db: Db) => Promise<void>) => Promise<void>,
  ): Promise<void> {
    // One transaction, one cheap statement per instance (no network round trips).
    await inTransaction(async (db) => {
      for (const [id, at] of latest) {
        await db
          .updateTable('instances')
          .set({ last_activity_at: at })
          .where('id', '=', id)
          .where((eb) => eb.or([eb('last_activity_at', 'is', null), eb('last_activity_at', '<', at)]))
          .execute()
      }
    })
  }

  tryLead(): Promise<boolean> {
    return Promise.resolve(true)
  }

  /** One process owns a SQLite store, so its buckets live here, with the same arithmetic as Postgres's rows. */
  readonly #buckets = new Map<string, { tokens: number; at: number }>()
  takeRateToken(key: string, rate: number, burst: number, now: number): Promise<RateDecision> {
    const next = takeToken(this.#buckets.get(key), rate, burst, now)
    this.#buckets.set(key, { tokens: next.tokens, at: next.at })
    return Promise.resolve(next.decision)
  }

  /** One process (SQLite is single-process): nothing to fence. */
  leaderEpoch(): number | undefined {
    return undefined
  }

  readonly shareLock = sql.raw('')

  /** One process writes an SQLite store: its own pool publishes every change. */
  watchInstances(): undefined {
    return undefined
  }

  async isEmpty(): Promise<boolean> {
    const r = await sql<{ n: number }>`select count(*) as n from sqlite_master
      where type = 'table' and name = 'studiopool_migration'`.execute(this.db)
    return Number(r.rows[0]?.n ?? 0) === 0
  }

  migrationTableSchema(): Promise<string | undefined> {
    return Promise.resolve(undefined)
  }

  async close(): Promise<void> {
    await this.#checkpointer?.close()
    await this.db.destroy()
  }
}
