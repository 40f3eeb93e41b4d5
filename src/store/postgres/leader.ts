/**
 * Leader election among replicas for the worker (issue 16, docs/ha.md "Leader take-over"): a session
 * advisory lock on a dedicated connection, plus a fencing epoch.
 *
 * - kill -9, a crash, a closed socket: the server ends the session and frees the lock at once; a
 *   standby's next try (every `pollMs`) takes it.
 * - A frozen process (SIGSTOP, a stalled VM) keeps its socket open, and TCP keepalives are answered
 *   by its kernel, so they cannot tell. The leader's connection therefore runs with
 *   `idle_session_timeout = timeoutMs`: the leader renews it with a round trip every `pollMs`; a
 *   leader that stops doing so is disconnected by the server after `timeoutMs` and the lock is freed.
 * - A partition from Postgres: the same server-side timeout frees the lock; on the leader's side each
 *   round trip is bounded by `timeoutMs` (query_timeout), after which it stops leading.
 * - Whatever the old leader still does after that (a write already on its way), fencing refuses:
 *   the winner increments `leader_epochs.epoch` under the lock, and every worker write names its
 *   epoch (fence.ts, sql-ops.ts).
 */
import { hostname } from 'node:os'
import type pg from 'pg'
import type { Logger } from 'pino'

export interface LeaderTiming {
  /** How long a silent leader keeps the lock: the server's idle_session_timeout on its connection, ms. */
  readonly timeoutMs: number
}

export class PgLeader {
  readonly #newClient: (timing: LeaderTiming) => pg.Client
  readonly #key: string
  readonly #poolId: string
  readonly #log: Logger
  readonly #timing: LeaderTiming
  #client: pg.Client | undefined
  #leading = false
  #epoch: number | undefined
  #closed = false

  constructor(
    newClient: (timing: LeaderTiming) => pg.Client,
    o: { key: string; poolId: string; log: Logger; timing: LeaderTiming },
  ) {
    this.#newClient = newClient
    this.#key = o.key
    this.#poolId = o.poolId
    this.#log = o.log
    this.#timing = o.timing
  }

  /** The epoch this process leads under; undefined when it does not lead. */
  get epoch(): number | undefined {
    return this.#leading ? this.#epoch : undefined
  }

  #pending: Promise<boolean> | undefined

  /** One attempt at a time (the worker's cycle and its leader poll may ask at once). */
  tryLead(): Promise<boolean> {
    this.#pending ??= this.#tryLead().finally(() => (this.#pending = undefined))
    return this.#pending
  }

  async #tryLead(): Promise<boolean> {
    if (this.#closed) return false
    try {
      if (this.#client && this.#leading) {
        // Still ours only while the connection lives, and only while our epoch is the newest: the
        // round trip also renews the server's idle_session_timeout.
        const r = await this.#client.query<{ epoch: string }>('select epoch from leader_epochs where pool_id = $1', [
          this.#poolId,
        ])
        if (Number(r.rows[0]?.epoch) === this.#epoch) return true
        this.#log.error({ epoch: this.#epoch, current: r.rows[0]?.epoch }, 'another replica leads now; stepping down')
        this.#drop(this.#client)
        return false
      }
      const client = await this.#connect()
      const r = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1::bigint) as ok', [this.#key])
      if (r.rows[0]?.ok !== true) return false
      const e = await client.query<{ epoch: string }>(
        `insert into leader_epochs (pool_id, epoch, holder, acquired_at) values ($1, 1, $2, $3)
         on conflict (pool_id) do update set epoch = leader_epochs.epoch + 1, holder = excluded.holder,
           acquired_at = excluded.acquired_at
         returning epoch`,
        [this.#poolId, `${hostname()}:${process.pid}`, Date.now()],
      )
      this.#epoch = Number(e.rows[0]!.epoch)
      this.#leading = true
      this.#log.info({ epoch: this.#epoch }, 'this replica leads the worker now')
      return true
    } catch (err) {
      this.#log.warn({ err: { message: (err as Error).message } }, 'leader election query failed')
      if (this.#client) this.#drop(this.#client)
      return false
    }
  }

  async #connect(): Promise<pg.Client> {
    if (this.#client) return this.#client
    const c = this.#newClient(this.#timing)
    c.on('error', (err) => {
      this.#log.warn({ err: { message: err.message } }, 'leader connection lost')
      this.#drop(c)
    })
    c.on('end', () => this.#drop(c))
    this.#client = c
    try {
      await c.connect()
    } catch (err) {
      this.#drop(c)
      throw err
    }
    // Postgres ≥ 14. On an older server a frozen leader keeps the lock until its process resumes or
    // dies; fencing still refuses its writes once another leads, but no other can take over.
    await c
      .query(`set idle_session_timeout = ${Math.max(1000, Math.round(this.#timing.timeoutMs))}`)
      .catch((err) =>
        this.#log.warn(
          { err: { message: (err as Error).message } },
          'idle_session_timeout is not supported by this Postgres (< 14): a frozen leader is not replaced until it resumes',
        ),
      )
    return c
  }

  #drop(client: pg.Client): void {
    if (this.#client !== client) return
    if (this.#leading) this.#log.warn({ epoch: this.#epoch }, 'this replica no longer leads the worker')
    this.#client = undefined
    this.#leading = false
    client.end().catch(() => {})
  }

  async close(): Promise<void> {
    this.#closed = true
    const client = this.#client
    this.#client = undefined
    this.#leading = false
    if (client) {
      client.removeAllListeners('end')
      await client.end().catch(() => {})
    }
  }
}
