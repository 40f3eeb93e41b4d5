import type { AuditEvent } from '../domain/instance.js'

type AuditRow = Omit<AuditEvent, 'id'>

/**
 * The pool's audit rows of one event-loop turn, written together as one multi-row insert. A top-up
 * writes three (warm, provisioned, ready) and a burst of claims starts hundreds of top-ups: one
 * statement per row was a fifth of the statements a claim cost the store (bench:api at minFree).
 *
 * Durability is what it was: each row is written after the state change it records committed (the
 * warm claim's own `assigned` row stays inside the claim's transaction, src/store), and `add`
 * resolves only once its row is in the store, so callers that await it still publish after it.
 * What a crash between the two can lose is the same as before, one turn instead of one statement.
 * One batch is written at a time: rows added while one is in flight (on Postgres a round trip,
 * turns long) go together in the next, right after it, instead of as many one-row inserts of their
 * own (issue 10: 1.3 single-row inserts per warm hit at minFree on Postgres).
 * A failed batch is retried row by row, so one bad row cannot lose the others; a row that still
 * fails is reported to `onError` (the pool logs it; audits never fail the operation they record).
 */
export class AuditBatch {
  readonly #write: (rows: readonly AuditRow[]) => Promise<void>
  readonly #onError: (err: unknown, row: AuditRow) => void
  #rows: AuditRow[] = []
  #done: (() => void)[] = []
  #writing = false

  constructor(write: (rows: readonly AuditRow[]) => Promise<void>, onError: (err: unknown, row: AuditRow) => void) {
    this.#write = write
    this.#onError = onError
  }

  add(row: AuditRow): Promise<void> {
    return new Promise((resolve) => {
      this.#rows.push(row)
      this.#done.push(resolve)
      if (this.#rows.length === 1 && !this.#writing) setImmediate(() => void this.#flush())
    })
  }

  async #flush(): Promise<void> {
    if (this.#writing) return
    this.#writing = true
    try {
      await this.#writeBatch()
    } finally {
      this.#writing = false
      if (this.#rows.length) setImmediate(() => void this.#flush())
    }
  }

  async #writeBatch(): Promise<void> {
    const rows = this.#rows
    const done = this.#done
    this.#rows = []
    this.#done = []
    try {
      await this.#write(rows)
    } catch (err) {
      if (rows.length === 1) this.#onError(err, rows[0]!)
      else
        for (const row of rows) {
          try {
            await this.#write([row])
          } catch (e) {
            this.#onError(e, row)
          }
        }
    }
    for (const d of done) d()
  }
}
