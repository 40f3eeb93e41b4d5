/**
 * What the store's callers and both adapters share about the two SQL backends: their configuration,
 * advisory-lock keys, and how their errors read (a unique violation, an outage, a lost connection).
 * How each one opens, transacts and claims lives in sqlite/ and postgres/ (adapter.ts).
 */
import { createHash } from 'node:crypto'

export { pgClientConfig } from './postgres/postgres-adapter.js'

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

/** Socket errors that mean the database server cannot be reached at all. */
const NETWORK_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
])

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
  if (NETWORK_ERRORS.has(code)) return `cannot reach Postgres (${code})`
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
  if (NETWORK_ERRORS.has(code)) return true
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
