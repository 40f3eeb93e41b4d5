/**
 * The Postgres side of the store (node-postgres).
 *
 * `transaction(fn, poolLock)` first takes `pg_advisory_xact_lock(key(poolId))` when asked, so cap
 * checks and inserts are serialized across connections and replicas; the warm claim is one
 * statement per batch that locks its rows with `FOR UPDATE SKIP LOCKED` (warm-claim.ts): the claims
 * of one event-loop turn share it, and batches run at once on the pool's connections. The partial
 * unique index on (owner_id, template) over live states rejects a second live instance whatever the
 * caller did. Leader election is a session advisory lock (leader.ts).
 */
import type { RateDecision } from '../../domain/rate-limit.js'
import { takePgRateToken } from './rate-limit.js'
import { userInfo } from 'node:os'
import pg from 'pg'
import { Kysely, PostgresDialect, sql } from 'kysely'
import type { Logger } from 'pino'
import type { StoreAdapter } from '../adapter.js'
import { advisoryKey, PG_TIMEOUT_DEFAULTS, type PgTimeouts } from '../dialects.js'
import type { MigrationDialect } from '../migrations/index.js'
import type { Db } from '../rows.js'
import type { InstanceWatch, InstanceWatcher, WarmClaimInput, WarmClaimResult } from '../store.js'
import { listenForChanges } from './change-listener.js'
import type { Database } from '../tables.js'
import { PgLeader, type LeaderTiming } from './leader.js'
import { claimWarmPg } from './warm-claim.js'
import { WarmClaimBatcher } from '../warm-batcher.js'

/**
 * The channel route changes are announced on (0008-ha); the payload is `<schema> <instanceId> <ms>`
 * and, unless it would not fit NOTIFY's 8000 bytes, ` <the row as JSON>` (without the progress token
 * hash), so a follower need not read the row back.
 */
export const ROUTE_CHANNEL = 'studiopool_routes'

const MIGRATIONS: MigrationDialect = {
  serialPrimaryKey: (t, column) => t.addColumn(column, 'bigserial', (c) => c.primaryKey()),
  async installRouteNotify(db) {
    // The payload names the schema (several pools or tests may share a database) and when the row
    // changed (ms, the server's clock), so a follower can measure how long the news took.
    await sql`create or replace function studiopool_route_notify() returns trigger language plpgsql as $$
      declare
        p text;
        r text;
      begin
        p := current_schema() || ' ' || coalesce(new.id, old.id) || ' '
          || (extract(epoch from clock_timestamp()) * 1000)::bigint::text;
        if tg_op <> 'DELETE' then
          r := (to_jsonb(new) - 'progress_token_hash')::text;
          if octet_length(p) + octet_length(r) < 7900 then p := p || ' ' || r; end if;
        end if;
        perform pg_notify(${sql.lit(ROUTE_CHANNEL)}, p);
        return null;
      end $$`.execute(db)
    // Deferred constraint triggers fire at commit: the time they stamp is when the change became
    // visible, not when a longer transaction first wrote the row.
    await sql`create constraint trigger instances_route_notify after insert or delete on instances
      deferrable initially deferred for each row execute function studiopool_route_notify()`.execute(db)
    await sql`create constraint trigger instances_route_change_notify after update on instances
      deferrable initially deferred for each row
      when (old.state is distinct from new.state or old.owner_id is distinct from new.owner_id
        or old.address is distinct from new.address or old.generation is distinct from new.generation
        or old.progress is distinct from new.progress or old.progress_message is distinct from new.progress_message)
      execute function studiopool_route_notify()`.execute(db)
  },
  async removeRouteNotify(db) {
    await sql`drop trigger if exists instances_route_change_notify on instances`.execute(db)
    await sql`drop trigger if exists instances_route_notify on instances`.execute(db)
    await sql`drop function if exists studiopool_route_notify()`.execute(db)
  },
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

export interface PostgresOptions {
  readonly url: string
  readonly poolSize: number
  readonly log: Logger
  /** config.pool.id: the advisory-lock keys derive from it. */
  readonly poolId: string
  readonly timeouts?: PgTimeouts
  /** How long a silent worker leader keeps its lock (ha.leaderTimeout), ms. */
  readonly leaderTimeoutMs?: number
}

export const LEADER_TIMEOUT_DEFAULT_MS = 5_000

export function openPostgres(opts: PostgresOptions): StoreAdapter {
  const timeouts = opts.timeouts ?? PG_TIMEOUT_DEFAULTS
  const cfg: pg.ClientConfig = {
    ...pgClientConfig(opts.url),
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
  const newPool = (max: number, name: string) => {
    const pool = new pg.Pool({
      ...cfg,
      Client: BoundedClient,
      connectionTimeoutMillis: timeouts.queryMs > 0 ? 2 * timeouts.queryMs : 0,
      max,
      application_name: name,
    })
    // An idle client that loses its connection emits 'error' on the pool; unhandled, it would crash the process.
    pool.on('error', (err) =>
      opts.log.warn(
        { err: { message: err.message, code: (err as { code?: string }).code } },
        'postgres idle client error',
      ),
    )
    // A client in use between two statements (inside a transaction) has no listener of the pool's:
    // Postgres stopping (57P01) or the socket dropping then emitted 'error' with none, and crashed
    // the process. Its next statement fails instead, and the pool drops it when it is released.
    pool.on('connect', (client) =>
      client.on('error', (err) =>
        opts.log.warn(
          { err: { message: err.message, code: (err as { code?: string }).code } },
          'postgres client error',
        ),
      ),
    )
    return pool
  }
  // Warm claims get connections of their own, carved out of poolSize: behind every claim the pool
  // tops up (an insert under the pool lock, then the new instance's provisioning and readiness
  // writes, a dozen statements), and in one shared FIFO queue a claim waited behind all of them.
  const total = Math.max(1, opts.poolSize)
  const claimConnections = total >= 4 ? Math.max(1, Math.floor(total / 4)) : 0
  const pool = newPool(total - claimConnections, 'studiopool')
  const claimPool = claimConnections > 0 ? newPool(claimConnections, 'studiopool-claims') : pool
  // keepAlive: a half-open leader connection must not hold the leader lock for hours. Each of its
  // round trips is bounded by the leader timeout: a leader that cannot reach Postgres stops leading.
  const newClient = (t: LeaderTiming) =>
    new pg.Client({ ...cfg, keepAlive: true, query_timeout: t.timeoutMs, application_name: 'studiopool-leader' })
  const leader = new PgLeader(newClient, {
    key: advisoryKey(opts.poolId, 'leader'),
    poolId: opts.poolId,
    log: opts.log,
    timing: { timeoutMs: opts.leaderTimeoutMs ?? LEADER_TIMEOUT_DEFAULT_MS },
  })
  return new PostgresAdapter({ pool, claimPool, leader, poolId: opts.poolId, url: opts.url, log: opts.log, cfg })
}

class PostgresAdapter implements StoreAdapter {
  readonly dialect = 'postgres' as const
  readonly db: Kysely<Database>
  readonly migrations = MIGRATIONS
  /** For warm claims only (openPostgres): the same pool as Kysely's when poolSize is under 4. */
  readonly #claimPool: pg.Pool
  readonly #ownClaimPool: boolean
  readonly #leader: PgLeader
  readonly #assignKey: string
  readonly #batcher = new WarmClaimBatcher((claims) => claimWarmPg(this.#claimPool, claims))
  readonly #cfg: pg.ClientConfig
  readonly #log: Logger
  readonly #watches = new Set<InstanceWatch>()

  constructor(o: {
    pool: pg.Pool
    claimPool: pg.Pool
    leader: PgLeader
    poolId: string
    url: string
    log: Logger
    cfg: pg.ClientConfig
  }) {
    this.#cfg = o.cfg
    this.#log = o.log
    this.#claimPool = o.claimPool
    this.#ownClaimPool = o.claimPool !== o.pool
    this.#leader = o.leader
    this.#assignKey = advisoryKey(o.poolId, 'assign')
    this.db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: o.pool }) })
  }

  transaction<T>(fn: (db: Db) => Promise<T>, poolLock: boolean): Promise<T> {
    return this.db.transaction().execute(async (trx) => {
      if (poolLock) await sql`select pg_advisory_xact_lock(${this.#assignKey}::bigint)`.execute(trx)
      return fn(trx)
    })
  }

  claimWarm(claim: WarmClaimInput, now: number): Promise<WarmClaimResult> {
    return this.#batcher.claim(claim, now)
  }

  assignWarm(claims: readonly WarmClaimInput[], now: number): Promise<WarmClaimResult[]> {
    return claimWarmPg(
      this.#claimPool,
      claims.map((claim) => ({ claim, now })),
    )
  }

  async recordActivity(db: Db, latest: ReadonlyMap<string, number>): Promise<void> {
    // One statement for the whole batch.
    const ids = [...latest.keys()]
    const ats = ids.map((id) => latest.get(id)!)
    await sql`update instances as i set last_activity_at = v.at
      from unnest(${ids}::text[], ${ats}::bigint[]) as v(id, at)
      where i.id = v.id and (i.last_activity_at is null or i.last_activity_at < v.at)`.execute(db)
  }

  tryLead(): Promise<boolean> {
    return this.#leader.tryLead()
  }

  takeRateToken(key: string, rate: number, burst: number, now: number): Promise<RateDecision> {
    return takePgRateToken(this.db, key, rate, burst, now)
  }

  leaderEpoch(): number | undefined {
    return this.#leader.epoch
  }

  readonly shareLock = sql.raw('for share')

  watchInstances(watcher: InstanceWatcher): InstanceWatch {
    const w = listenForChanges(this.#cfg, ROUTE_CHANNEL, this.#log, watcher)
    this.#watches.add(w)
    return {
      connected: w.connected,
      close: async () => {
        this.#watches.delete(w)
        await w.close()
      },
    }
  }

  async isEmpty(): Promise<boolean> {
    const r = await sql<{ t: string | null }>`select to_regclass('studiopool_migration')::text as t`.execute(this.db)
    return !r.rows[0]?.t
  }

  async migrationTableSchema(): Promise<string | undefined> {
    // Kysely's "does the migration table exist" check looks in every schema; pin it to ours so
    // that several schemas (tests, several pools) in one database do not see each other's.
    const r = await sql<{ s: string | null }>`select current_schema() as s`.execute(this.db)
    return r.rows[0]?.s ?? undefined
  }

  async close(): Promise<void> {
    for (const w of [...this.#watches]) await w.close()
    this.#watches.clear()
    await this.#leader.close()
    if (this.#ownClaimPool) await this.#claimPool.end().catch(() => {})
    await this.db.destroy()
  }
}
