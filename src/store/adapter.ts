/**
 * What differs between the two SQL backends, behind one interface (like Kysely's DialectAdapter):
 * sqlite/sqlite-adapter.ts and postgres/postgres-adapter.ts implement it, and everything else in
 * the store (sql-ops.ts, sql-store.ts) is dialect-neutral Kysely. Nothing outside src/store/ knows
 * which one runs (eslint.config.js forbids reading `.dialect` there).
 */
import type { Kysely, RawBuilder } from 'kysely'
import type { RateDecision } from '../domain/rate-limit.js'
import type { MigrationDialect, SqlDialect } from './migrations/index.js'
import type { Db } from './rows.js'
import type { InstanceWatch, InstanceWatcher, WarmClaimInput, WarmClaimResult } from './store.js'
import type { Database } from './tables.js'

export interface StoreAdapter {
  readonly dialect: SqlDialect
  readonly db: Kysely<Database>
  /** What the migrations need of the dialect (identity columns). */
  readonly migrations: MigrationDialect
  /**
   * Runs fn in a new transaction, on its own connection. With `poolLock` the transaction holds the
   * pool's assignment lock for its whole length (Store.withPoolLock).
   */
  transaction<T>(fn: (db: Db) => Promise<T>, poolLock: boolean): Promise<T>
  /**
   * The warm hit for one claim (Store.claimWarm). The adapter may run concurrent claims together:
   * SQLite commits the claims of one event-loop turn in one transaction (group commit).
   */
  claimWarm(claim: WarmClaimInput, now: number): Promise<WarmClaimResult>
  /** The warm hit for each claim of a batch, in order (Store.assignWarm). */
  assignWarm(claims: readonly WarmClaimInput[], now: number): Promise<WarmClaimResult[]>
  /**
   * lastActivityAt = max(lastActivityAt, at) for each entry. `db` is the caller's handle (the store's,
   * or the current transaction's); `inTransaction` runs fn in a transaction (the current one when
   * already inside one).
   */
  recordActivity(
    db: Db,
    latest: ReadonlyMap<string, number>,
    inTransaction: (fn: (db: Db) => Promise<void>) => Promise<void>,
  ): Promise<void>
  /** Store.tryLead. */
  tryLead(): Promise<boolean>
  /** Store.takeRateToken. */
  takeRateToken(key: string, rate: number, burst: number, now: number): Promise<RateDecision>
  /** The epoch this process leads under (fence.ts); undefined when it does not lead or need not fence (SQLite). */
  leaderEpoch(): number | undefined
  /** `for share` where row locks exist (Postgres), empty on SQLite: the fence's read of leader_epochs. */
  readonly shareLock: RawBuilder<unknown>
  /** Store.watchInstances: undefined on SQLite. */
  watchInstances(watcher: InstanceWatcher): InstanceWatch | undefined
  /** True when no studiopool table exists yet. */
  isEmpty(): Promise<boolean>
  /** The schema Kysely's migrator keeps its tables in (undefined: the dialect's default). */
  migrationTableSchema(): Promise<string | undefined>
  close(): Promise<void>
}
