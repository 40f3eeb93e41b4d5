/**
 * The pool skips its queue reads while it knows the queue is empty (src/pool/queue-hint.ts), and
 * the store stays the truth: on both stores a request this pool queued is served as soon as
 * capacity frees; on Postgres, with two pools on one store (two replicas), a request queued by the
 * other one reaches this one through the route follower's notifications, so that capacity freed
 * here serves it at once, without a worker cycle.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { StoreRouteSync } from '../../src/pool/store-route-sync.js'
import { createStoreFromUrl } from '../../src/store/sql-store.js'
import type { Store } from '../../src/store/store.js'
import { waitFor } from '../helpers/wait.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { appServer, makeHarness, type Harness } from './harness.js'

const app = await appServer()
after(() => app.close())

const yaml = `
pool: { id: test, maxInstances: 1 }
templates:
  demo:
    provider: fake
    minFree: 0
    maxInstances: 1
    idleTimeout: 0
    maxLifetime: 0
    healthPath: /
`

const served = async (store: Store, id: string) => {
  const row = await store.getInstance(id)
  return row !== undefined && row.state !== 'queued'
}

for (const kind of STORE_KINDS) {
  describe(`queue hint on ${kind.name}`, () => {
    test('a request queued here is served once capacity frees, after the pool had found the queue empty', async () => {
      const h = makeHarness(await kind.make({ poolId: 'test' }), yaml, { appUrl: app.url })
      after(() => h.close())
      const a = await h.pool.request({ userId: 'u1', template: 'demo' })
      assert.equal(a.outcome, 'cold')
      await h.pool.drain()
      await h.pool.serveQueue() // as every free instance's change does: the queue is found empty
      const b = await h.pool.request({ userId: 'u2', template: 'demo' })
      assert.equal(b.outcome, 'queued')
      await h.pool.release(a.instance.id, 'user')
      await waitFor('the queued request served', () => served(h.store, b.instance.id))
    })
  })
}

for (const kind of STORE_KINDS.filter((k) => k.name === 'postgres')) {
  describe('queue hint across two replicas on postgres', () => {
    test("another replica's queued request is served by capacity freed here, without a worker cycle", async () => {
      const url = await kind.freshUrl()
      const harnesses: Harness[] = []
      const syncs: StoreRouteSync[] = []
      after(async () => {
        for (const s of syncs) await s.stop()
        for (const x of harnesses) await x.close()
      })
      const replica = async () => {
        const store = await createStoreFromUrl(url, { poolId: 'test' })
        // Wired as replica-steps.ts does: trusted while the listener is connected.
        const h = makeHarness(store, yaml, { appUrl: app.url, watchQueue: false })
        const sync = new StoreRouteSync(store, h.pool, h.hub, pino({ level: 'silent' }))
        assert.ok(sync.start({ pollWithoutNotify: false }))
        h.pool.watchQueue(() => sync.status().mode === 'notify')
        harnesses.push(h)
        syncs.push(sync)
        await waitFor('the listener connected', () => sync.status().mode === 'notify')
        return h
      }
      const here = await replica()
      const there = await replica()
      const a = await here.pool.request({ userId: 'u1', template: 'demo' })
      assert.equal(a.outcome, 'cold')
      await here.pool.drain()
      await here.pool.serveQueue() // as every free instance's change does: this replica finds the queue empty
      const b = await there.pool.request({ userId: 'u2', template: 'demo' })
      assert.equal(b.outcome, 'queued')
      await here.pool.release(a.instance.id, 'user')
      await waitFor("the other replica's queued request served here", () => served(here.store, b.instance.id))
      const row = (await here.store.getInstance(b.instance.id))!
      assert.equal(row.ownerId, 'u2')
    })
  })
}
