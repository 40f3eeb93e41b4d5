/**
 * Issue 10, the warm hit's cost: what the pool does around claims and top-ups, on both stores (a real
 * SQLite file, a real Postgres schema) and the fake provider.
 *   - a turn's audit rows are one store write, and a row that cannot be written loses no other;
 *   - a warm pool far below its minFree fills in short pool-lock passes, and topUp() still resolves
 *     with it full;
 *   - serveQueue calls made together share passes;
 *   - the worker reads the active instances in pages and still reconciles every one.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { ACTIVE_STATES, FREE_STATES } from '../../src/domain/instance.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { LABEL_INSTANCE, LABEL_OWNER, LABEL_POOL, LABEL_TEMPLATE } from '../../src/providers/provider.js'
import type { Store, StoreTx } from '../../src/store/store.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { appServer, makeHarness } from './harness.js'

const app = await appServer()
after(() => app.close())

const yaml = (minFree: number, poolMax = 10_000) => `
pool: { id: test, maxInstances: ${poolMax} }
templates:
  demo: { provider: fake, minFree: ${minFree}, maxInstances: ${poolMax}, healthPath: / }
`

/** The real store, with every method call counted by name (and its arguments kept). */
function counting(store: Store): { store: Store; calls: Map<string, unknown[][]> } {
  const calls = new Map<string, unknown[][]>()
  const wrapped = new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown
      if (typeof v !== 'function') return v
      return (...args: unknown[]) => {
        const name = String(prop)
        if (!calls.has(name)) calls.set(name, [])
        calls.get(name)!.push(args)
        return (v as (...a: unknown[]) => unknown).apply(target, args)
      }
    },
  })
  return { store: wrapped, calls }
}

for (const kind of STORE_KINDS) {
  describe(`the warm hit's surroundings on ${kind.name}`, () => {
    test("a turn's audit rows are written by one store call, each resolves once its row is there, and a row that cannot be written loses no other", async () => {
      const { store, calls } = counting(await kind.make())
      const h = makeHarness(store, yaml(0), { appUrl: app.url })
      try {
        const seen: number[] = []
        const written = (n: number) => async () => {
          seen.push((await store.listAudit({ limit: 100 })).filter((e) => e.event.startsWith('t-')).length)
          return n
        }
        await Promise.all([
          h.pool.audit('i1', 't-one', null, { n: 1 }).then(written(1)),
          h.pool.audit('i2', 't-two', 'admin', { n: 2 }).then(written(2)),
          h.pool.audit(null, 't-three', null, { n: 3 }).then(written(3)),
        ])
        assert.equal(calls.get('audit')?.length, 1, 'one store write for the three rows')
        assert.ok(
          seen.every((n) => n === 3),
          `every audit() resolved after the rows were in the store (saw ${seen.join(', ')})`,
        )
        const rows = (await store.listAudit({ limit: 100 })).filter((e) => e.event.startsWith('t-'))
        assert.deepEqual(rows.map((e) => e.event).sort(), ['t-one', 't-three', 't-two'])
        assert.deepEqual(rows.find((e) => e.event === 't-two')?.detail, { n: 2 })

        // A detail that cannot be serialized fails the batch; the others are written one by one.
        calls.clear()
        await Promise.all([
          h.pool.audit('i4', 'u-good', null, { n: 4 }),
          h.pool.audit('i5', 'u-bad', null, { n: 5n }),
          h.pool.audit('i6', 'u-good2', null, { n: 6 }),
        ])
        const after = (await store.listAudit({ limit: 100 })).map((e) => e.event).filter((e) => e.startsWith('u-'))
        assert.deepEqual(after.sort(), ['u-good', 'u-good2'])
        assert.equal(calls.get('audit')?.length, 4, 'the batch, then each of its three rows alone')
      } finally {
        await h.close()
      }
    })

    test('a warm pool far below its minFree fills in pool-lock passes of at most 25 new rows, and topUp() resolves with it full', async () => {
      const real = await kind.make({ poolSize: 10 })
      const perLock: number[] = []
      // Count the rows each pool-lock transaction inserts (the lock is what warm claims wait for on SQLite).
      const store = new Proxy(real, {
        get(target, prop, receiver) {
          if (prop !== 'withPoolLock') {
            const v = Reflect.get(target, prop, receiver) as unknown
            return typeof v === 'function' ? (v as (...x: unknown[]) => unknown).bind(target) : v
          }
          return <T>(fn: (tx: StoreTx) => Promise<T>) =>
            target.withPoolLock((tx) => {
              let n = 0
              const counted = new Proxy(tx, {
                get(t, p) {
                  const v = Reflect.get(t, p, t) as unknown
                  if (typeof v !== 'function') return v
                  if (p !== 'insertInstance') return (v as (...x: unknown[]) => unknown).bind(t)
                  return (...a: unknown[]) => {
                    n++
                    return (v as (...x: unknown[]) => unknown).apply(t, a)
                  }
                },
              })
              return fn(counted).finally(() => perLock.push(n))
            })
        },
      })
      const h = makeHarness(store, yaml(60), { appUrl: app.url })
      try {
        await h.pool.topUp()
        const free = await real.countInstances({ template: 'demo', assigned: false, states: FREE_STATES })
        assert.equal(free, 60, 'the warm pool is at its minFree when topUp() resolves')
        const inserting = perLock.filter((n) => n > 0)
        assert.ok(
          inserting.every((n) => n <= 25),
          `no pass inserted more than 25 rows (passes: ${inserting.join(', ')})`,
        )
        assert.equal(
          inserting.reduce((a, b) => a + b, 0),
          60,
          'each row once',
        )
        assert.ok(inserting.length >= 3, `60 rows take at least three passes (${inserting.length})`)
      } finally {
        await h.close()
      }
    })

    test('serveQueue calls made together share passes: 20 at once read the queue at most twice', async () => {
      const { store, calls } = counting(await kind.make())
      const h = makeHarness(store, yaml(0), { appUrl: app.url })
      try {
        calls.clear()
        await Promise.all(Array.from({ length: 20 }, () => h.pool.serveQueue()))
        const reads = calls.get('listQueued')?.length ?? 0
        assert.ok(reads >= 1 && reads <= 2, `the queue was read ${reads} times`)
      } finally {
        await h.close()
      }
    })

    test('listInstancesPage reads every matching row once, in id order, a page at a time', async () => {
      const store = await kind.make()
      const now = Date.now()
      // Seven active (provisioning, starting, ready, stopping, suspended) among ended and queued ones.
      const states = [
        'ready',
        'starting',
        'terminated',
        'queued',
        'ready',
        'failed',
        'provisioning',
        'stopping',
        'suspended',
        'ready',
      ] as const
      for (const [i, state] of states.entries())
        await store.insertInstance({
          id: newInstanceId(),
          template: 'demo',
          state,
          ownerId: state === 'queued' ? `q${i}` : null,
          keyName: null,
          createdAt: now - i * 1000, // so that listInstances' order (created_at) is not simply the ids'
        })
      const want = (await store.listInstances({ states: ACTIVE_STATES })).map((i) => i.id).sort()
      const got: string[] = []
      const pages: number[] = []
      for (let after: string | null = null; ;) {
        const page = await store.listInstancesPage({ states: ACTIVE_STATES }, after, 2)
        pages.push(page.length)
        got.push(...page.map((i) => i.id))
        if (page.length < 2) break
        after = page.at(-1)!.id
      }
      assert.equal(want.length, 7)
      assert.deepEqual(got, want)
      assert.deepEqual(pages, [2, 2, 2, 1])
    })

    test('a worker cycle over more active instances than one page reconciles every one (vanished ones in both pages are replaced)', async () => {
      const { store, calls } = counting(await kind.make({ poolSize: 10 }))
      const h = makeHarness(store, yaml(0), { appUrl: app.url })
      try {
        const n = 1100
        const now = Date.now()
        await store.transaction(async (tx) => {
          for (let i = 0; i < n; i++) {
            const id = newInstanceId()
            const labels = {
              [LABEL_POOL]: 'test',
              [LABEL_INSTANCE]: id,
              [LABEL_TEMPLATE]: 'demo',
              [LABEL_OWNER]: `u${i}`,
            }
            const res = await h.provider.create(
              {
                id,
                poolId: 'test',
                template: { name: 'demo', settings: {} } as never,
                basePath: `/s/${id}/`,
                labels,
                progressUrl: '',
                progressToken: '',
                appToken: '',
                ownerId: `u${i}`,
                sessionUrl: '',
              },
              { log: pino({ level: 'silent' }) },
            )
            await tx.insertInstance({
              id,
              template: 'demo',
              state: 'ready',
              ownerId: `u${i}`,
              keyName: 'test',
              providerRef: res.ref,
              address: app.url,
              createdAt: now,
              readyAt: now,
              assignedAt: now,
              lastActivityAt: now,
            })
          }
        })
        // Vanished instances in both pages (id order, 1,000 a page).
        const ids = (await store.listInstances({ states: ['ready'] })).map((i) => i.id).sort()
        const gone = [ids[10]!, ids[600]!, ids[1090]!]
        for (const id of gone) assert.ok(h.provider.vanish(id))
        calls.clear()
        const report = await h.worker.runOnce()
        assert.equal(report?.replaced, 3)
        assert.equal(calls.get('listInstancesPage')?.length, 2, 'the active instances were read in two pages')
        await h.pool.drain()
        for (const id of gone) {
          const inst = await store.getInstance(id)
          assert.equal(inst?.generation, 1, `${id} was replaced under the same id`)
        }
      } finally {
        await h.close()
      }
    })
  })
}
