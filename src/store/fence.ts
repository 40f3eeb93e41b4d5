/**
 * Fencing for the worker's writes (issue 16, docs/ha.md "Leader take-over"). A replica that wins the
 * leader lock increments the pool's row in `leader_epochs` and runs its worker cycle inside
 * `runFenced(epoch, …)`; every instance write made in that async context (the cycle and the tasks it
 * starts: provisioning, replacement, culling) carries the epoch, and the store refuses it — in the
 * same statement — once the row holds a newer one. A frozen or partitioned leader that wakes up
 * after another took over can therefore not change an instance: its writes fail with
 * StaleLeaderError and it stops leading.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { sql, type RawBuilder } from 'kysely'
import type { Db } from './rows.js'

const fence = new AsyncLocalStorage<number>()

/** Runs fn with every instance write in it fenced by `epoch`. */
export function runFenced<T>(epoch: number, fn: () => Promise<T>): Promise<T> {
  return fence.run(epoch, fn)
}

/** The epoch the current async context writes under; undefined outside a worker cycle. */
export function currentEpoch(): number | undefined {
  return fence.getStore()
}

/** A write of a leader that is no longer the leader: refused, nothing changed. */
export class StaleLeaderError extends Error {
  readonly code = 'STALE_LEADER'
  constructor(
    readonly epoch: number,
    readonly current: number | undefined,
  ) {
    super(`refused a write of the worker leader epoch ${epoch}: epoch ${current ?? '?'} leads now`)
  }
}

/** The condition a fenced write carries: `epoch` is still the pool's leader epoch (share-locking the row). */
export function epochHolds(poolId: string, epoch: number, shareLock: RawBuilder<unknown>) {
  return sql<boolean>`exists (select 1 from leader_epochs where pool_id = ${poolId} and epoch = ${epoch} ${shareLock})`
}

/** Throws StaleLeaderError unless `epoch` is the pool's leader epoch (share-locking its row until commit). */
export async function fenceCheck(db: Db, poolId: string, epoch: number, shareLock: RawBuilder<unknown>): Promise<void> {
  const r = await sql<{
    epoch: number
  }>`select epoch from leader_epochs where pool_id = ${poolId} ${shareLock}`.execute(db)
  const current = r.rows[0] === undefined ? undefined : Number(r.rows[0].epoch)
  if (current !== epoch) throw new StaleLeaderError(epoch, current)
}
