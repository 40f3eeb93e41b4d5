/**
 * The store contract against a real Postgres (STUDIOPOOL_TEST_PG, default postgres://127.0.0.1:5432/test).
 * Every store gets its own fresh schema (search_path via the URL's `options`), dropped at the end,
 * so parallel runs and other suites sharing the database do not collide. When Postgres is down
 * this fails with a clear message; STUDIOPOOL_SKIP_PG=1 skips it instead.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import pino from 'pino'
import { createStore } from '../../src/store/sql-store.js'
import { advisoryKey, pgClientConfig } from '../../src/store/dialects.js'
import { newInstanceId } from '../../src/domain/ids.js'
import type { Store } from '../../src/store/store.js'
import { storeContract } from '../contract/store-contract.js'
import { MIGRATION_NAMES } from '../../src/store/migrations/index.js'

const BASE_URL = process.env.STUDIOPOOL_TEST_PG ?? 'postgres://127.0.0.1:5432/test'
const SKIP = process.env.STUDIOPOOL_SKIP_PG === '1'
const log = pino({ level: 'silent' })
const runId = `sp_test_${process.pid}_${randomBytes(4).toString('hex')}`
const schemas: string[] = []

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@')
}

/** One admin connection (pg's default type parsers), used to create and drop schemas. */
let admin: pg.Client | undefined
let unreachable: string | undefined
if (!SKIP) {
  const c = new pg.Client({
    connectionString: pgClientConfig(BASE_URL).connectionString,
    connectionTimeoutMillis: 5000,
  })
  try {
    await c.connect()
    admin = c
  } catch (err) {
    unreachable =
      `Postgres is not reachable at ${redact(BASE_URL)}: ${(err as Error).message}. ` +
      'Start Postgres, point STUDIOPOOL_TEST_PG at one, or set STUDIOPOOL_SKIP_PG=1 to skip these tests.'
    await c.end().catch(() => {})
  }
}

after(async () => {
  if (!admin) return
  for (const s of schemas) await admin.query(`drop schema if exists "${s}" cascade`)
  await admin.end()
})

async function freshSchema(): Promise<string> {
  const name = `${runId}_${schemas.length + 1}`
  schemas.push(name)
  await admin!.query(`create schema "${name}"`)
  return name
}

function urlFor(schema: string): string {
  const u = new URL(BASE_URL)
  u.searchParams.set('options', `-c search_path=${schema}`)
  return u.toString()
}

async function makeStore(schema?: string, poolId = 'test'): Promise<Store> {
  const s = schema ?? (await freshSchema())
  return createStore({ driver: 'postgres', url: urlFor(s), poolSize: 10 }, { log, poolId })
}

if (SKIP) {
  test('postgres store tests', { skip: 'STUDIOPOOL_SKIP_PG=1' }, () => {})
} else if (unreachable) {
  test('postgres store tests need a running Postgres', () => {
    assert.fail(unreachable)
  })
} else {
  storeContract('postgres', () => makeStore())

  describe('postgres specifics', () => {
    test('tables live in the store’s own schema; timestamps are bigint read back as numbers', async () => {
      const schema = await freshSchema()
      const s = await makeStore(schema)
      try {
        const r = await admin!.query<{ table_name: string }>(
          'select table_name from information_schema.tables where table_schema = $1 order by table_name',
          [schema],
        )
        assert.deepEqual(
          r.rows.map((x) => x.table_name),
          [
            'api_keys',
            'assignments',
            'audit_log',
            'cost_segments',
            'instances',
            'leader_epochs',
            'meta',
            'nonces',
            'rate_limits',
            'shared_usage',
            'state_samples',
            'studiopool_migration',
            'studiopool_migration_lock',
            'webhook_deliveries',
          ],
        )
        const col = await admin!.query<{ data_type: string }>(
          "select data_type from information_schema.columns where table_schema = $1 and table_name = 'instances' and column_name = 'created_at'",
          [schema],
        )
        assert.equal(col.rows[0]?.data_type, 'bigint')
        const big = 4_102_444_800_000 // 2100-01-01, beyond int4
        const i = await s.insertInstance({
          id: newInstanceId(),
          template: 't',
          state: 'ready',
          ownerId: null,
          keyName: null,
          createdAt: big,
        })
        assert.equal(i.createdAt, big)
        assert.equal(typeof (await s.getInstance(i.id))?.createdAt, 'number')
        // the parser is per pool: the global pg types still return int8 as a string
        const raw = await admin!.query<{ v: unknown }>('select 1::bigint as v')
        assert.equal(raw.rows[0]?.v, '1')
      } finally {
        await s.close()
      }
    })

    test('two replicas migrating one schema at once apply each migration once', async () => {
      const schema = await freshSchema()
      const stores = await Promise.all(Array.from({ length: 4 }, () => makeStore(schema)))
      try {
        const r = await admin!.query<{ name: string }>(`select name from "${schema}".studiopool_migration`)
        assert.deepEqual(
          r.rows.map((x) => x.name),
          MIGRATION_NAMES,
        )
        await Promise.all(stores.map((s) => s.migrate()))
        await stores[0]!.insertInstance({
          id: newInstanceId(),
          template: 't',
          state: 'ready',
          ownerId: null,
          keyName: null,
        })
        assert.equal((await stores[3]!.listInstances()).length, 1)
      } finally {
        await Promise.all(stores.map((s) => s.close()))
      }
    })

    test('tryLead: one leader per pool id; another takes over when it closes', async () => {
      const schema = await freshSchema()
      const poolId = `lead-${randomBytes(4).toString('hex')}`
      const a = await makeStore(schema, poolId)
      const b = await makeStore(schema, poolId)
      const other = await makeStore(schema, `${poolId}-other`)
      try {
        assert.equal(await a.tryLead(), true)
        assert.equal(await a.tryLead(), true, 're-entrant for the leader')
        assert.equal(await b.tryLead(), false)
        assert.equal(await other.tryLead(), true, 'another pool id has its own lock')
        await a.close()
        // the session lock goes with a's connection; b may take over (poll with a deadline)
        const deadline = Date.now() + 10_000
        let led = false
        while (!led && Date.now() < deadline) {
          led = await b.tryLead()
          if (!led) await new Promise((r) => setTimeout(r, 50))
        }
        assert.equal(led, true)
      } finally {
        await a.close()
        await b.close()
        await other.close()
      }
    })

    test('tryLead: losing the leader connection loses leadership, and another replica takes over', async () => {
      const schema = await freshSchema()
      const poolId = `lead-${randomBytes(4).toString('hex')}`
      const a = await makeStore(schema, poolId)
      const b = await makeStore(schema, poolId)
      try {
        assert.equal(await a.tryLead(), true)
        assert.equal(await b.tryLead(), false)
        // Find a's leader backend by its advisory lock (classid/objid are the key's high/low 32 bits).
        const key = BigInt.asUintN(64, BigInt(advisoryKey(poolId, 'leader')))
        const killed = await admin!.query(
          `select pg_terminate_backend(pid) as ok from pg_locks
           where locktype = 'advisory' and granted and classid = $1::bigint::oid and objid = $2::bigint::oid and objsubid = 1`,
          [(key >> 32n).toString(), (key & 0xffffffffn).toString()],
        )
        assert.equal(killed.rowCount, 1)
        const deadline = Date.now() + 10_000
        let bLeads = false
        while (!bLeads && Date.now() < deadline) {
          bLeads = await b.tryLead()
          if (!bLeads) await new Promise((r) => setTimeout(r, 50))
        }
        assert.equal(bLeads, true, 'b took over')
        assert.equal(await a.tryLead(), false, 'a noticed it lost the lock')
        assert.equal(await a.tryLead(), false)
      } finally {
        await a.close()
        await b.close()
      }
    })

    test('withPoolLock serializes across separate stores (replicas), not only within one pool', async () => {
      const schema = await freshSchema()
      const replicas = await Promise.all(Array.from({ length: 3 }, () => makeStore(schema)))
      try {
        const CAP = 30
        const results = await Promise.all(
          Array.from({ length: 120 }, (_, i) =>
            replicas[i % replicas.length]!.withPoolLock(async (tx) => {
              if ((await tx.countActive()).total >= CAP) return false
              await tx.insertInstance({
                id: newInstanceId(),
                template: 't',
                state: 'provisioning',
                ownerId: `u${i}`,
                keyName: null,
              })
              return true
            }),
          ),
        )
        assert.equal(results.filter(Boolean).length, CAP)
        assert.equal((await replicas[0]!.countActive()).total, CAP)
      } finally {
        await Promise.all(replicas.map((s) => s.close()))
      }
    })

    test('an unreachable database fails createStore with the driver error, and closes its pool', async () => {
      await assert.rejects(
        createStore(
          { driver: 'postgres', url: 'postgres://nobody@127.0.0.1:1/none', poolSize: 2 },
          { log, poolId: 'x' },
        ),
        /ECONNREFUSED|connect/,
      )
    })
  })
}
