/**
 * Leader election among replicas for the worker: a session advisory lock on a dedicated connection,
 * kept until close(). A dropped connection loses the lock with it: stop leading, reconnect next time.
 */
import type pg from 'pg'
import type { Logger } from 'pino'

export class PgLeader {
  readonly #newClient: () => pg.Client
  readonly #key: string
  readonly #log: Logger
  #client: pg.Client | undefined
  #leading = false
  #closed = false

  constructor(newClient: () => pg.Client, key: string, log: Logger) {
    this.#newClient = newClient
    this.#key = key
    this.#log = log
  }

  async tryLead(): Promise<boolean> {
    if (this.#closed) return false
    try {
      if (this.#client && this.#leading) {
        // Still ours only while the connection lives: a cheap round trip finds a dead one.
        await this.#client.query('select 1')
        return true
      }
      let client = this.#client
      if (!client) {
        client = this.#newClient()
        const c = client
        c.on('error', (err) => {
          this.#log.warn({ err: { message: err.message } }, 'leader connection lost')
          this.#drop(c)
        })
        c.on('end', () => this.#drop(c))
        this.#client = c
        await c.connect()
      }
      const r = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1::bigint) as ok', [this.#key])
      this.#leading = r.rows[0]?.ok === true
      return this.#leading
    } catch (err) {
      this.#log.warn({ err: { message: (err as Error).message } }, 'leader election query failed')
      if (this.#client) this.#drop(this.#client)
      return false
    }
  }

  #drop(client: pg.Client): void {
    if (this.#client !== client) return
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
