/**
 * Several replicas on one Postgres, at the store (issue 16, docs/ha.md): the worker leader's fencing
 * epoch, take-over after the leader's connection dies and after it freezes (idle_session_timeout),
 * route changes by LISTEN/NOTIFY, and the schema-version checks of a starting replica. Real
 * Postgres, one schema per test, separate stores as separate replicas would have them.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import pino from 'pino'
import { createStore } from '../../src/store/sql-store.js'
import { advisoryKey, pgClientConfig } from '../../src/store/dialects.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { StaleLeaderError } from '../../src/store/fence.js'
import { StartupRefusedError } from '../../src/domain/errors.js'
import type { InstanceChange, Store } from '../../src/store/store.js'
import { dropSchemas, freshPgUrl, PG_BASE_URL, PG_SKIP } from '../helpers/pg.js'
import { waitFor } from '../helpers/wait.js'

const log = pino({ level: 'silent' })
let admin: pg.Client

async function open(url: string, poolId: string, extra: { leaderTimeoutMs?: number } = {}): Promise<Store> {
  return createStore({ driver: 'postgres', url, poolSize: 4 }, { log, poolId, ...extra })
}

/** Terminates the backend that holds the pool's leader lock (what a dead leader's socket does to the server). */
async function killLeaderBackend(poolId: string): Promise<number> {
  const key = BigInt.asUintN(64, BigInt(advisoryKey(poolId, 'leader')))
  const r = await admin.query(
    `select pg_terminate_backend(pid) as ok from pg_locks
     where locktype = 'advisory' and granted and classid = $1::bigint::oid and objid = $2::bigint::oid and objsubid = 1`,
    [(key >> 32n).toString(), (key & 0xffffffffn).toString()],
  )
  return r.rowCount ?? 0
}

async function leadWithin(s: Store, ms: number): Promise<void> {
  await waitFor('the standby to take the leader lock', () => s.tryLead(), ms, 50)
}

const newRow = (id: string) => ({ id, template: 't', state: 'ready' as const, ownerId: null, keyName: null })

describe(
  'several replicas on one Postgres: fencing, take-over, route notifications, schema checks',
  {
    skip: PG_SKIP ? 'STUDIOPOOL_SKIP_PG=1' : false,
  },
  () => {
    before(async () => {
      admin = new pg.Client({ connectionString: pgClientConfig(PG_BASE_URL).connectionString })
      await admin.connect()
    })
    after(async () => {
      await admin.end()
      await dropSchemas()
    })

    test('a leader that lost the lock cannot change an instance: its writes carry its epoch and are refused', async () => {
      const url = await freshPgUrl()
      const poolId = `fence-${randomBytes(4).toString('hex')}`
      const a = await open(url, poolId)
      const b = await open(url, poolId)
      try {
        const id = newInstanceId()
        await a.insertInstance(newRow(id))
        assert.equal(await a.tryLead(), true)
        const epochA = a.leaderEpoch()!
        // A's worker cycle: one write now, then it stalls (a frozen process) while B takes over.
        let release!: () => void
        const stalled = new Promise<void>((r) => (release = r))
        let wrote!: () => void
        const firstDone = new Promise<void>((r) => (wrote = r))
        const cycle = a.fenced(async () => {
          const ok = await a.updateInstance(id, { progressMessage: 'by A' })
          assert.equal(ok?.progressMessage, 'by A')
          wrote()
          await stalled
          const results = await Promise.allSettled([
            a.updateInstance(id, { progressMessage: 'stale A' }),
            a.insertInstance(newRow(newInstanceId())),
            a.deleteInstance(id),
          ])
          return results
        })
        await firstDone
        assert.equal(await killLeaderBackend(poolId), 1)
        await leadWithin(b, 5000)
        const epochB = b.leaderEpoch()!
        assert.ok(epochB > epochA, `the new leader's epoch ${epochB} is newer than ${epochA}`)
        await b.fenced(() => b.updateInstance(id, { progressMessage: 'by B' }))
        release()
        const results = await cycle
        for (const r of results) {
          assert.equal(r.status, 'rejected', 'every write of the stale leader is refused')
          assert.ok(
            (r as PromiseRejectedResult).reason instanceof StaleLeaderError,
            String((r as PromiseRejectedResult).reason),
          )
        }
        const row = await b.getInstance(id)
        assert.equal(row?.progressMessage, 'by B', 'the row is as the new leader left it')
        assert.equal((await b.listInstances()).length, 1, 'the stale insert did not happen')
        const epochs = await admin.query(`select leader_epoch from ${schemaOf(url)}.instances where id = $1`, [id])
        assert.equal(Number(epochs.rows[0].leader_epoch), epochB, 'the row names the epoch that wrote it')
        assert.equal(await a.tryLead(), false, 'A knows it does not lead')
      } finally {
        await a.close()
        await b.close()
      }
    })

    test('a take-over waits for the old leader write in flight: the two never act at once', async () => {
      const url = await freshPgUrl()
      const poolId = `overlap-${randomBytes(4).toString('hex')}`
      const a = await open(url, poolId)
      const b = await open(url, poolId)
      try {
        assert.equal(await a.tryLead(), true)
        const events: string[] = []
        let inTx!: () => void
        const holding = new Promise<void>((r) => (inTx = r))
        const txDone = a.fenced(() =>
          a.withPoolLock(async (tx) => {
            await tx.insertInstance(newRow(newInstanceId())) // share-locks the epoch row until commit
            inTx()
            await new Promise((r) => setTimeout(r, 400))
            events.push('A committed')
          }),
        )
        await holding
        // A's leader connection dies while its transaction is open (the transaction is on another connection).
        assert.equal(await killLeaderBackend(poolId), 1)
        await leadWithin(b, 5000)
        events.push('B leads')
        await txDone
        assert.deepEqual(events, ['A committed', 'B leads'], 'B could bump the epoch only once A had committed')
      } finally {
        await a.close()
        await b.close()
      }
    })

    test('a frozen leader (no heartbeat) loses the lock after leaderTimeout: idle_session_timeout on its connection', async () => {
      const url = await freshPgUrl()
      const poolId = `freeze-${randomBytes(4).toString('hex')}`
      const a = await open(url, poolId, { leaderTimeoutMs: 1500 })
      const b = await open(url, poolId, { leaderTimeoutMs: 1500 })
      try {
        assert.equal(await a.tryLead(), true)
        // A heartbeats (as its worker's leader poll does) and keeps the lock past the timeout…
        const t0 = performance.now()
        while (performance.now() - t0 < 2500) {
          assert.equal(await a.tryLead(), true)
          assert.equal(await b.tryLead(), false)
          await new Promise((r) => setTimeout(r, 300))
        }
        // …then freezes: it sends nothing more. The server ends its session; B takes over.
        const frozenAt = performance.now()
        await leadWithin(b, 6000)
        const took = performance.now() - frozenAt
        assert.ok(took >= 1000 && took < 4000, `took over ${Math.round(took)} ms after the freeze (timeout 1.5 s)`)
        assert.equal(await a.tryLead(), false, 'A finds out when it resumes')
      } finally {
        await a.close()
        await b.close()
      }
    })

    test('route changes made by another replica arrive by LISTEN/NOTIFY; activity alone does not notify', async () => {
      const url = await freshPgUrl()
      const a = await open(url, 'notify')
      const b = await open(url, 'notify')
      const got: InstanceChange[] = []
      let resyncs = 0
      const watch = a.watchInstances({ changed: (c) => got.push(c), resync: () => resyncs++ })
      try {
        assert.ok(watch, 'Postgres stores can be watched')
        await waitFor('the listener to connect', () => watch.connected(), 5000)
        assert.equal(resyncs, 1, 'a resync on connect')
        const id = newInstanceId()
        await b.insertInstance(newRow(id))
        await waitFor('the insert to be announced', () => got.some((c) => c.id === id), 2000, 5)
        const before = got.length
        await b.recordActivity([{ id, at: Date.now() }])
        await b.updateInstance(id, { ownerId: 'u1', assignedAt: Date.now() })
        await waitFor('the assignment to be announced', () => got.length > before, 2000, 5)
        assert.equal(got.length, before + 1, 'the activity write sent nothing, the assignment one notification')
        assert.equal(got.at(-1)?.row?.ownerId, 'u1', 'the notification carries the row as written')
        assert.equal(got.at(-1)?.row?.progressTokenHash, null, 'but not the progress token hash')
        assert.ok(
          got.every((c) => Math.abs(Date.now() - c.changedAt) < 5000),
          'each names when it changed',
        )
        // Another schema's changes (another pool in the same database) are not ours.
        const other = await open(await freshPgUrl(), 'notify')
        const n = got.length
        await other.insertInstance(newRow(newInstanceId()))
        await b.updateInstance(id, { progressMessage: 'marker' })
        await waitFor('our own next change', () => got.length > n, 2000, 5)
        assert.deepEqual(
          got.slice(n).map((c) => c.id),
          [id],
          "only this schema's rows",
        )
        await other.close()
        // The listener's connection dies: it reconnects and asks for a full resync.
        await admin.query(
          `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'studiopool-routes'`,
        )
        await waitFor('a resync after the reconnect', () => resyncs >= 2 && watch.connected(), 10_000)
      } finally {
        await watch?.close()
        await a.close()
        await b.close()
      }
    })

    test("a replica older than the store's schema refuses to start; autoMigrate off refuses pending migrations", async () => {
      const url = await freshPgUrl()
      const s = await open(url, 'schema')
      await s.close()
      await admin.query(
        `insert into ${schemaOf(url)}.studiopool_migration (name, timestamp) values ('9999-from-the-future', now()::text)`,
      )
      await assert.rejects(open(url, 'schema'), (err: Error) => {
        assert.ok(err instanceof StartupRefusedError)
        assert.match(err.message, /schema is newer than this release.*9999-from-the-future/)
        return true
      })
      const url2 = await freshPgUrl()
      const t = await open(url2, 'schema')
      await t.close()
      await admin.query(`delete from ${schemaOf(url2)}.studiopool_migration where name = '0008-ha'`)
      await assert.rejects(
        createStore({ driver: 'postgres', url: url2, poolSize: 2 }, { log, poolId: 'schema', migrate: 'check' }),
        /needs migration\(s\) 0008-ha and ha.autoMigrate is false.*studiopool migrate/,
      )
    })
  },
)

function schemaOf(url: string): string {
  return /search_path=([A-Za-z0-9_]+)/.exec(decodeURIComponent(new URL(url).searchParams.get('options') ?? ''))![1]!
}
