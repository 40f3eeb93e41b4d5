/**
 * The pool engine against both stores (a real SQLite file, a real Postgres schema) and the fake
 * provider: assignment, caps under concurrency, queue, release, warm top-up, history.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { AppError } from '../../src/domain/errors.js'
import { ACTIVE_STATES, LIVE_STATES } from '../../src/domain/instance.js'
import { waitFor } from '../helpers/wait.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { appServer, makeHarness } from './harness.js'

const app = await appServer()
after(() => app.close())

const yaml = (o: {
  poolMax: number
  tMax?: number
  minFree?: number
  whenFull?: 'queue' | 'reject'
  extra?: string
}) => `
pool: { id: test, maxInstances: ${o.poolMax} }
templates:
  demo: { provider: fake, minFree: ${o.minFree ?? 0}, maxInstances: ${o.tMax ?? 1000}, whenFull: ${o.whenFull ?? 'queue'}, healthPath: / }
${o.extra ?? ''}`

for (const kind of STORE_KINDS) {
  describe(`pool engine on ${kind.name}`, () => {
    test('200 simultaneous requests for 200 users against maxInstances 50: exactly 50 instances ever exist, the rest queue', async () => {
      const store = await kind.make({ poolSize: 20 })
      const h = makeHarness(store, yaml({ poolMax: 50 }), { appUrl: app.url })
      try {
        const results = await Promise.all(
          Array.from({ length: 200 }, (_, i) => h.pool.request({ userId: `u${i}`, keyName: 'test' })),
        )
        const by = (o: string) => results.filter((r) => r.outcome === o).length
        assert.equal(by('cold'), 50)
        assert.equal(by('queued'), 150)
        // Queue positions are 1..150, each once.
        const positions = results
          .filter((r) => r.outcome === 'queued')
          .map((r) => r.queuePosition)
          .sort((a, b) => a! - b!)
        assert.deepEqual(
          positions,
          Array.from({ length: 150 }, (_, i) => i + 1),
        )
        await h.pool.drain()
        await waitFor(
          '50 ready instances',
          async () => (await store.listInstances({ states: ['ready'] })).length === 50,
        )
        assert.equal(h.provider.calls.create, 50, 'the provider was asked for exactly 50 instances')
        assert.equal(h.provider.instances().length, 50)
        assert.equal((await store.countActive()).total, 50)
        const live = await store.listInstances({ states: LIVE_STATES })
        const owners = live.map((i) => i.ownerId)
        assert.equal(new Set(owners).size, owners.length, 'no user holds two instances')
        assert.equal(live.length, 200)
      } finally {
        await h.close()
      }
    })

    test('under whenFull: reject the 150 over the cap get POOL_FULL with Retry-After', async () => {
      const store = await kind.make({ poolSize: 20 })
      const h = makeHarness(store, yaml({ poolMax: 50, whenFull: 'reject' }), { appUrl: app.url })
      try {
        const settled = await Promise.allSettled(
          Array.from({ length: 200 }, (_, i) => h.pool.request({ userId: `u${i}` })),
        )
        const ok = settled.filter((s) => s.status === 'fulfilled')
        const full = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected')
        assert.equal(ok.length, 50)
        assert.equal(full.length, 150)
        for (const f of full) {
          assert.ok(f.reason instanceof AppError)
          assert.equal(f.reason.code, 'POOL_FULL')
          assert.equal(f.reason.statusCode, 503)
          assert.ok(f.reason.retryAfter! > 0)
        }
        await h.pool.drain()
        assert.equal(h.provider.calls.create, 50)
        assert.equal((await store.listInstances({ states: LIVE_STATES })).length, 50)
      } finally {
        await h.close()
      }
    })

    test('20 simultaneous requests by one user give one instance', async () => {
      const store = await kind.make({ poolSize: 20 })
      const h = makeHarness(store, yaml({ poolMax: 50, minFree: 3 }), { appUrl: app.url })
      try {
        await h.pool.topUp()
        await waitFor(
          'three warm instances',
          async () => (await store.listInstances({ states: ['ready'], assigned: false })).length === 3,
        )
        const results = await Promise.all(Array.from({ length: 20 }, () => h.pool.request({ userId: 'alice' })))
        const ids = new Set(results.map((r) => r.instance.id))
        assert.equal(ids.size, 1)
        assert.equal(results.filter((r) => r.outcome === 'warm').length, 1, 'one warm hit, the rest see it as existing')
        assert.equal((await store.listInstances({ ownerId: 'alice', states: LIVE_STATES })).length, 1)
        assert.equal((await store.listHistory({ userId: 'alice' })).length, 1, 'one assignment recorded')
      } finally {
        await h.close()
      }
    })

    test('simultaneous warm hits of many users (some twice) give each user one warm instance, one assignment and one audit row', async () => {
      const store = await kind.make({ poolSize: 20 })
      const h = makeHarness(store, yaml({ poolMax: 100, minFree: 10 }), { appUrl: app.url })
      try {
        await h.pool.topUp()
        await waitFor(
          'ten warm instances',
          async () => (await store.listInstances({ states: ['ready'], assigned: false })).length === 10,
        )
        const warm = new Set((await store.listInstances({ states: ['ready'], assigned: false })).map((i) => i.id))
        // On SQLite these share commits (one batch per turn of the event loop); a user's second request sees the first.
        const users = [...Array.from({ length: 10 }, (_, i) => `w${i}`), 'w0', 'w3', 'w7', 'w9']
        const results = await Promise.all(users.map((userId) => h.pool.request({ userId, keyName: 'test' })))
        assert.equal(results.filter((r) => r.outcome === 'warm').length, 10)
        assert.equal(results.filter((r) => r.outcome === 'existing').length, 4)
        for (const [i, r] of results.entries()) {
          assert.equal(r.instance.ownerId, users[i])
          assert.ok(warm.has(r.instance.id), 'every user got one of the warm instances')
          assert.equal(
            r.instance.id,
            results[users.indexOf(users[i]!)]!.instance.id,
            'a second request gets the same instance',
          )
        }
        assert.equal(new Set(results.map((r) => r.instance.id)).size, 10)
        const history = await store.listHistory({})
        assert.equal(history.length, 10, 'one assignment per user')
        assert.deepEqual(new Set(history.map((a) => a.userId)), new Set(users))
        for (const id of warm)
          assert.equal((await store.listAudit({ instanceId: id })).filter((e) => e.event === 'assigned').length, 1)
      } finally {
        await h.close()
      }
    })

    test('20 simultaneous requests by one user with no warm pool give one instance and one provider call', async () => {
      const store = await kind.make({ poolSize: 20 })
      const h = makeHarness(store, yaml({ poolMax: 50 }), { appUrl: app.url })
      try {
        const results = await Promise.all(Array.from({ length: 20 }, () => h.pool.request({ userId: 'bob' })))
        assert.equal(new Set(results.map((r) => r.instance.id)).size, 1)
        await h.pool.drain()
        assert.equal(h.provider.calls.create, 1)
      } finally {
        await h.close()
      }
    })

    test('a warm hit is ready at once; the warm pool is topped up after it; release records history and frees capacity for the queue', async () => {
      const store = await kind.make()
      const h = makeHarness(store, yaml({ poolMax: 2, minFree: 1 }), { appUrl: app.url })
      try {
        await h.pool.topUp()
        await waitFor(
          'one warm instance',
          async () => (await store.listInstances({ states: ['ready'], assigned: false })).length === 1,
        )
        const a = await h.pool.request({ userId: 'a' })
        assert.equal(a.outcome, 'warm')
        assert.equal(a.instance.state, 'ready')
        // Top-up refills the warm pool (pool cap 2: one assigned + one free).
        await waitFor(
          'warm pool refilled',
          async () => (await store.listInstances({ states: ['ready'], assigned: false })).length === 1,
        )
        const b = await h.pool.request({ userId: 'b' })
        assert.equal(b.outcome, 'warm')
        await h.pool.drain()
        const c = await h.pool.request({ userId: 'c' })
        assert.equal(c.outcome, 'queued')
        assert.equal(c.queuePosition, 1)
        assert.equal(h.hub.get(c.instance.id)?.queuePosition, 1, 'the gateway sees the queue position')
        await h.pool.release(a.instance.id, 'user', 'test')
        await h.pool.drain()
        await waitFor(
          'the queued request is served when capacity frees',
          async () => (await store.getInstance(c.instance.id))?.state === 'ready',
        )
        const hist = await store.listHistory({ userId: 'a' })
        assert.equal(hist.length, 1)
        assert.equal(hist[0]!.endReason, 'user')
        assert.ok(hist[0]!.endedAt! >= hist[0]!.startedAt)
        assert.equal((await store.getInstance(a.instance.id))?.state, 'terminated')
        assert.equal(h.hub.get(a.instance.id), undefined, 'the route is gone')
        // Releasing again is fine (idempotent).
        await h.pool.release(a.instance.id, 'user')
      } finally {
        await h.close()
      }
    })

    test('a full pool of warm instances of one template makes way for another template', async () => {
      const store = await kind.make()
      const extra = `  other: { provider: fake, minFree: 0, maxInstances: 5, healthPath: / }`
      const h = makeHarness(store, yaml({ poolMax: 2, minFree: 2, extra }), { appUrl: app.url })
      try {
        await h.pool.topUp()
        await waitFor(
          'two warm demo instances',
          async () => (await store.listInstances({ states: ['ready'], assigned: false })).length === 2,
        )
        const r = await h.pool.request({ userId: 'x', template: 'other' })
        assert.equal(r.outcome, 'queued')
        await h.pool.drain()
        await waitFor(
          'the other template gets its instance',
          async () => (await store.getInstance(r.instance.id))?.state === 'ready',
        )
        const active = await store.countActive()
        assert.ok(active.total <= 2, `pool cap held: ${active.total}`)
      } finally {
        await h.close()
      }
    })

    test('a create failure is retried under the same id, then fails with a reason and closes the assignment', async () => {
      const store = await kind.make()
      const h = makeHarness(store, yaml({ poolMax: 5 }), { appUrl: app.url })
      try {
        h.provider.failCreate = () => new Error('InsufficientInstanceCapacity: no t2.micro in eu-central-1a')
        const r = await h.pool.request({ userId: 'f' })
        await h.pool.drain()
        const inst = await waitFor('the instance to fail', async () => {
          const i = await store.getInstance(r.instance.id)
          return i?.state === 'failed' ? i : undefined
        })
        assert.match(inst.failureReason ?? '', /InsufficientInstanceCapacity/)
        const hist = await store.listHistory({ userId: 'f' })
        assert.equal(hist[0]!.endReason, 'failed')
        assert.equal(h.provider.instances().filter((i) => i.state !== 'terminated').length, 0, 'nothing leaked')
      } finally {
        await h.close()
      }
    })

    test('progress reports need the per-instance token and move the progress shown to the gateway', async () => {
      const store = await kind.make()
      let token = ''
      const h = makeHarness(store, yaml({ poolMax: 5 }), { appUrl: 'http://127.0.0.1:9' })
      const orig = h.provider.create.bind(h.provider)
      h.provider.create = async (spec, o) => {
        token = spec.progressToken
        return orig(spec, o)
      }
      try {
        const r = await h.pool.request({ userId: 'p' })
        await waitFor('create to be called', () => token)
        await waitFor('starting', async () => (await store.getInstance(r.instance.id))?.state === 'starting')
        await assert.rejects(
          h.pool.reportProgress(r.instance.id, 'wrong-token', 50, 'x'),
          (e: AppError) => e.code === 'UNAUTHORIZED',
        )
        await h.pool.reportProgress(r.instance.id, token, 60, 'image pulled')
        assert.equal(h.hub.get(r.instance.id)?.progress, 60)
        assert.equal(h.hub.get(r.instance.id)?.progressMessage, 'image pulled')
      } finally {
        await h.pool.release((await store.listInstances({ ownerId: 'p', states: LIVE_STATES }))[0]!.id, 'user')
        await h.close()
      }
    })

    test('caps count only active states', () => {
      assert.deepEqual([...ACTIVE_STATES].sort(), ['provisioning', 'ready', 'starting', 'stopping', 'suspended'])
    })
  })
}

describe('pool engine inputs', () => {
  let h: ReturnType<typeof makeHarness>
  before(async () => {
    const store = await STORE_KINDS[0]!.make()
    h = makeHarness(store, yaml({ poolMax: 5 }), { appUrl: app.url })
  })
  after(() => h.close())
  test('an unknown template is a 400 naming the known ones', async () => {
    await assert.rejects(
      h.pool.request({ userId: 'u', template: 'nope' }),
      (e: AppError) => e.code === 'INVALID_REQUEST' && /known templates: demo/.test(JSON.stringify(e.details)),
    )
  })
})
