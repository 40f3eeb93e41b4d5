/**
 * The two SQL backends: how to open them, and the few places where their SQL or their errors
 * differ. Everything else in sql-store.ts is dialect-neutral Kysely.
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { createHash } from 'node:crypto'
import { userInfo } from 'node:os'
import BetterSqlite3 from 'better-sqlite3'
import pg from 'pg'
import { Kysely, PostgresDialect, SqliteDialect, type SqliteDatabase, type SqliteStatement } from 'kysely'
import type { Logger } from 'pino'
import type { Database } from './tables.js'
import type { SqlDialect } from './migrations/index.js'
import { refuseDamaged } from './store-check.js'

export type StoreConfig =
  | { readonly driver: 'sqlite'; readonly path: string }
  | { readonly driver: 'postgres'; readonly url: string; readonly poolSize: number; readonly timeouts?: PgTimeouts }

/**
 * Postgres timeouts, ms (issue 9 item 4: a frozen server hung every call for as long as it was frozen).
 * `connectMs` bounds a new connection (the wait for a free pooled one is bounded by 2 × `queryMs`); `statementMs` is the
 * server's statement_timeout; `queryMs` is the client's own limit for a server that does not answer
 * at all (SIGSTOP, a dead host without RST); `idleInTransactionMs` frees locks held by a stuck client.
 */
export interface PgTimeouts {
  readonly connectMs: number
  readonly statementMs: number
  readonly queryMs: number
  readonly idleInTransactionMs: number
}

export const PG_TIMEOUT_DEFAULTS: PgTimeouts = {
  connectMs: 5_000,
  statementMs: 10_000,
  queryMs: 15_000,
  idleInTransactionMs: 60_000,
}

export interface OpenedDb {
  readonly dialect: SqlDialect
  readonly db: Kysely<Database>
  /** SQLite only: the database handle under Kysely, for the synchronous hot path (Store.assignWarm). */
  readonly sqlite?: BetterSqlite3.Database
  /** Postgres only: the pool under Kysely, for named (prepared) statements on the hot path. */
  readonly pgPool?: pg.Pool
  /** Postgres only: a new dedicated client with the same settings (leader lock). */
  readonly newClient?: () => pg.Client
}

/** How long a SQLite writer waits for another process's lock before SQLITE_BUSY, ms. */
const SQLITE_BUSY_TIMEOUT_MS = 5000

export function openSqlite(path: string, opts: { integrityCheck?: boolean } = {}): OpenedDb {
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
  return {
    dialect: 'sqlite',
    sqlite: database,
    db: new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(database) }) }),
  }
}

/** Statements kept per SQL text; the store issues a few dozen distinct ones. */
const STATEMENT_CACHE_MAX = 500

/**
 * Kysely's SQLite driver prepares every query anew; preparing was a tenth of a warm hit's CPU.
 * better-sqlite3 statements are reusable and run synchronously, so one per SQL text is safe
 * (the store never streams rows). Bounded, since `IN (…)` lists of other lengths are other texts.
 */
function withStatementCache(database: BetterSqlite3.Database): SqliteDatabase {
  const cache = new Map<string, BetterSqlite3.Statement>()
  return {
    close: () => database.close(),
    prepare: (sql: string) => {
      let stmt = cache.get(sql)
      if (!stmt) {
        stmt = database.prepare(sql)
        if (cache.size < STATEMENT_CACHE_MAX) cache.set(sql, stmt)
      }
      return stmt as unknown as SqliteStatement
    },
  }
}

const PG_INT8 = 20
const PG_NUMERIC = 1700

/**
 * Timestamps are `bigint` on Postgres, and node-postgres returns int8 as a string by default
 * (it may exceed 2^53). Ours are epoch ms and counts, far below that, so this pool, and only
 * this pool (not pg.types globally, which other code in the process may rely on), reads them
 * as numbers.
 */
const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) => {
    if ((oid === PG_INT8 || oid === PG_NUMERIC) && format !== 'binary')
      return (v: string) => (v === null ? null : Number(v))
    return pg.types.getTypeParser(oid, format as 'text')
  }) as pg.CustomTypesConfig['getTypeParser'],
}

export function pgClientConfig(url: string): pg.ClientConfig {
  // libpq falls back to the OS user when the URL names none; node-postgres uses $USER, which
  // is unset in some service managers and containers. Match libpq so `postgres://host/db` works.
  // (It must go into the URL: pg lets the parsed connection string override a separate `user`.)
  let connectionString = url
  try {
    const u = new URL(url)
    if (u.username === '' && !process.env.PGUSER && !process.env.USER) {
      u.username = encodeURIComponent(userInfo().username)
      connectionString = u.toString()
    }
  } catch {
    // not a URL (a keyword/value string): leave it to pg
  }
  return { connectionString, types: pgTypes }
}

export function openPostgres(
  url: string,
  poolSize: number,
  log: Logger,
  timeouts: PgTimeouts = PG_TIMEOUT_DEFAULTS,
): OpenedDb {
  const cfg: pg.ClientConfig = {
    ...pgClientConfig(url),
    connectionTimeoutMillis: timeouts.connectMs,
    statement_timeout: timeouts.statementMs,
    query_timeout: timeouts.queryMs,
    idle_in_transaction_session_timeout: timeouts.idleInTransactionMs,
  }
  // pg-pool uses one setting for "connect" and "wait for a free pooled connection". A burst of
  // requests may rightly wait longer than a connect may take (200 at once behind the pool lock),
  // so each new connection gets connectMs of its own (the client enforces it) and the wait for a
  // pooled one is bounded by twice the longest a query may run: longer means a dead store.
  const connectMs = timeouts.connectMs
  class BoundedClient extends pg.Client {
    constructor(c?: pg.ClientConfig) {
      super({ ...c, connectionTimeoutMillis: connectMs })
    }
  }
  const pool = new pg.Pool({
    ...cfg,
    Client: BoundedClient,
    connectionTimeoutMillis: timeouts.queryMs > 0 ? 2 * timeouts.queryMs : 0,
    max: Math.max(1, poolSize),
  })
  // An idle client that loses its connection emits 'error' on the pool; unhandled, it would crash the process.
  pool.on('error', (err) =>
    log.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'postgres idle client error'),
  )
  return {
    dialect: 'postgres',
    pgPool: pool,
    db: new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }),
    // keepAlive: a half-open leader connection must not hold the leader lock for hours.
    newClient: () => new pg.Client({ ...cfg, keepAlive: true, application_name: 'studiopool-leader' }),
  }
}

/**
 * A 64-bit advisory-lock key for this pool and purpose, as a decimal string (bigint SQL literal).
 * Derived from the pool id so that several pools can share one database.
 */
export function advisoryKey(poolId: string, purpose: 'assign' | 'leader'): string {
  const digest = createHash('sha256').update(`studiopool:${purpose}:${poolId}`).digest()
  return digest.readBigInt64BE(0).toString()
}

/** The name of the unique index a unique violation hit, or undefined when the error is not one. */
export function uniqueViolation(err: unknown): { index: string } | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const e = err as { code?: unknown; constraint?: unknown; message?: unknown }
  if (e.code === '23505') return { index: typeof e.constraint === 'string' ? e.constraint : '' }
  if (e.code === 'SQLITE_CONSTRAINT_UNIQUE' || e.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    // SQLite names the columns, not the index: "UNIQUE constraint failed: instances.owner_id, instances.template".
    const msg = typeof e.message === 'string' ? e.message : ''
    const cols = msg.slice(msg.indexOf(':') + 1).trim()
    return { index: SQLITE_UNIQUE_COLUMNS[cols] ?? cols }
  }
  return undefined
}

/**
 * Why the store is unavailable, when `err` says it is (rather than a bug or a constraint): a short
 * reason for the 503 and /readyz, or undefined. Postgres: no connection, a connection lost, a
 * timeout, a server shutting down or out of resources. SQLite: disk full, I/O errors, a read-only
 * or locked file, a damaged file.
 */
export function unavailableReason(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const e = err as { code?: unknown; message?: unknown }
  const code = typeof e.code === 'string' ? e.code : ''
  const message = typeof e.message === 'string' ? e.message : ''
  if (code.startsWith('SQLITE_')) {
    if (code === 'SQLITE_FULL') return 'disk full'
    if (code.startsWith('SQLITE_IOERR')) return 'disk I/O error'
    if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return 'database locked by another process'
    if (code.startsWith('SQLITE_READONLY')) return 'database is read-only'
    if (code.startsWith('SQLITE_CANTOPEN')) return 'cannot open the database file'
    if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') return 'database file is damaged'
    if (code === 'SQLITE_PROTOCOL' || code === 'SQLITE_NOMEM') return code.slice(7).toLowerCase()
    return undefined
  }
  if (
    [
      'ECONNREFUSED',
      'ECONNRESET',
      'ETIMEDOUT',
      'EHOSTUNREACH',
      'ENETUNREACH',
      'ENOTFOUND',
      'EAI_AGAIN',
      'EPIPE',
    ].includes(code)
  )
    return `cannot reach Postgres (${code})`
  // SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57 operator intervention
  // (57014 is a statement_timeout), 58 system error; 25P03 idle-in-transaction timeout.
  if (/^(08|53|57|58)[0-9A-Z]{3}$/.test(code) || code === '25P03')
    return code === '57014' ? 'Postgres statement timeout' : `Postgres unavailable (${code})`
  if (
    /^Query read timeout$|timeout exceeded when trying to connect|Connection terminated|not queryable|Cannot use a pool after calling end|driver has already been destroyed/i.test(
      message,
    )
  )
    return `Postgres unavailable (${message.slice(0, 80)})`
  return undefined
}

/**
 * True when `err` says the connection to Postgres is gone or does not answer (refused, reset,
 * connect or read timeout, terminated, server shutting down): every other call would wait for the
 * same timeouts. Not for a statement timeout or SQLite's errors, after which other calls may work.
 */
export function isConnectionLoss(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false
  const e = err as { code?: unknown; message?: unknown }
  const code = typeof e.code === 'string' ? e.code : ''
  const message = typeof e.message === 'string' ? e.message : ''
  if (
    [
      'ECONNREFUSED',
      'ECONNRESET',
      'ETIMEDOUT',
      'EHOSTUNREACH',
      'ENETUNREACH',
      'ENOTFOUND',
      'EAI_AGAIN',
      'EPIPE',
    ].includes(code)
  )
    return true
  if (/^08[0-9A-Z]{3}$/.test(code) || code === '57P01' || code === '57P02' || code === '57P03') return true
  return /^Query read timeout$|timeout exceeded when trying to connect|Connection terminated|not queryable/i.test(
    message,
  )
}

const SQLITE_UNIQUE_COLUMNS: Record<string, string> = {
  'instances.owner_id, instances.template': 'instances_live_owner_uq',
  'instances.id': 'instances_pkey',
  'assignments.instance_id': 'assignments_open_uq',
  'api_keys.name': 'api_keys_name_uq',
  'api_keys.id': 'api_keys_pkey',
}
