/**
 * Issue 9, item 1: queued users never wait beside free capacity. On both stores, with the fake
 * provider and a real app server whose health check answers 503 until the test lets the
 * instances "finish starting" (instances that take a while to start).
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { LIVE_STATES } from '../../src/domain/instance.js'
import { newInstanceId } from '../../src/domain/ids.js'
import type { Store } from '../../src/store/store.js'
import { waitFor } from '../helpers/wait.js'
import { STORE_KINDS } from '../helpers/stores.js'

/**
 * A pool id of this test's own: Postgres advisory-lock keys (the pool lock, worker leadership) derive
 * from it and are database-wide, so a shared id would make this test wait on other runs against the same database.
 */
const ownPool = () => `t-${newInstanceId().slice(0, 10)}`
import { makeHarness, type Harness } from './harness.js'

/** An app whose health check fails until `open()`: every instance "takes a while to start". */
async function gatedApp() {
  let ready = false
  const srv = createServer((_req, res) => {
    res.writeHead(ready ? 200 : 503).end(ready ? 'ok' : 'starting')
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    open: () => void (ready = true),
    close: () => new Promise<void>((r) => (srv.closeAllConnections(), srv.close(() => r()))),
  }
}

// The setting: MAX_INSTANCES=3 with minFree 1 (here in the file, as the env would build it).
const YAML = `
pool: { id: test, maxInstances: 3 }
templates:
  demo: { provider: fake, minFree: 1, maxInstances: 3, healthPath: /, fake: { startDelayMs: 200 } }
`

/** A queued request as request() writes it (row + open assignment), for states a replica or an older server left. */
async function queueRequest(store: Store, userId: string, at: number): Promise<string> {
  const id = newInstanceId()
  await store.insertInstance({
    id,
    template: 'demo',
    state: 'queued',
    ownerId: userId,
    keyName: 'test',
    createdAt: at,
    updatedAt: at,
    assignedAt: at,
    lastActivityAt: at,
    progress: 0,
    progressMessage: 'waiting for a free place in the pool',
  })
  await store.openAssignment({ instanceId: id, template: 'demo', userId, keyName: 'test', startedAt: at })
  return id
}

async function noQueueBesideFree(store: Store): Promise<void> {
  const queued = await store.listInstances({ states: ['queued'] })
  const free = await store.listInstances({ assigned: false, states: ['starting', 'ready'] })
  assert.ok(!(queued.length && free.length), `${queued.length} queued beside ${free.length} free running instances`)
}

for (const kind of STORE_KINDS) {
  describe(`free capacity goes to waiting users first, on ${kind.name}`, () => {
    const apps: Awaited<ReturnType<typeof gatedApp>>[] = []
    const harnesses: Harness[] = []
    after(async () => {
      for (const h of harnesses) await h.close()
      for (const a of apps) await a.close()
    })

    test('MAX_INSTANCES=3, minFree 1, slow starts: requests take the warm instance that is still starting; three instances, never a queue beside a free one', async () => {
      const app = await gatedApp()
      apps.push(app)
      const h = makeHarness(await kind.make({ poolId: ownPool() }), YAML, { appUrl: app.url })
      harnesses.push(h)
      await h.pool.topUp()
      const warm = await waitFor(
        'the warm instance to be starting',
        async () => (await h.store.listInstances({ states: ['starting'], assigned: false }))[0],
      )
      // Five users at once while the warm instance is still starting.
      const results = await Promise.all(
        ['u1', 'u2', 'u3', 'u4', 'u5'].map((userId) => h.pool.request({ userId, keyName: 'test' })),
      )
      // (No drain() while the app does not answer: the start probes run until the app answers.)
      await waitFor(
        'three instances starting',
        async () => (await h.store.listInstances({ states: ['starting'] })).length === 3,
      )
      const taker = results.find((r) => r.instance.id === warm.id)
      assert.ok(taker, 'one user was given the starting warm instance instead of a cold start')
      assert.equal(taker.outcome, 'warm')
      assert.equal(results.filter((r) => r.outcome === 'queued').length, 2)
      assert.equal(h.provider.calls.create, 3, 'three instances made, none beyond the cap')
      await noQueueBesideFree(h.store)
      app.open()
      await waitFor(
        'three ready instances',
        async () => (await h.store.listInstances({ states: ['ready'] })).length === 3,
      )
      // A session ends: the first queued user gets the freed place; no free instance exists, so a new one is made.
      const first = results.find((r) => r.outcome === 'queued' && r.queuePosition === 1)!
      await h.pool.release(results.find((r) => r.outcome !== 'queued')!.instance.id, 'user')
      await h.pool.drain()
      assert.notEqual((await h.store.getInstance(first.instance.id))!.state, 'queued')
      await noQueueBesideFree(h.store)
      assert.equal((await h.store.countActive()).total, 3)
    })

    test('a queued request takes a free instance the moment it finishes starting, without a worker cycle or a new create', async () => {
      const app = await gatedApp()
      apps.push(app)
      const h = makeHarness(await kind.make({ poolId: ownPool() }), YAML.replace('minFree: 1', 'minFree: 0'), {
        appUrl: app.url,
      })
      harnesses.push(h)
      // Two users hold instances; a free one is starting (left by a replica, or by an older server); two users wait.
      const a = await h.pool.request({ userId: 'a' })
      await h.pool.request({ userId: 'b' })
      const now = Date.now()
      const free = await h.store.insertInstance({
        id: newInstanceId(),
        template: 'demo',
        state: 'provisioning',
        ownerId: null,
        keyName: null,
        createdAt: now,
        updatedAt: now,
        startedAt: now,
        progress: 0,
        progressMessage: 'warming up',
      })
      const q1 = await queueRequest(h.store, 'q1', now + 1)
      const q2 = await queueRequest(h.store, 'q2', now + 2)
      await h.pool.provision(free)
      const creates = h.provider.calls.create
      assert.equal(creates, 3)
      // Still starting: handed over already (a request may be given an instance that is still starting).
      const moved = await waitFor('the first queued request to take the free instance', async () => {
        const q = await h.store.getInstance(q1)
        return q && q.state !== 'queued' ? q : undefined
      })
      assert.equal(moved.ownerId, 'q1')
      assert.equal(moved.id, q1, 'the user keeps the instanceId and URL they were given')
      assert.equal((await h.store.getInstance(free.id))!.state, 'terminated', 'the free row ended')
      const res = h.provider.instances().find((r) => r.ref === moved.providerRef)!
      assert.equal(res.state === 'terminated', false, 'the resource was kept, not destroyed')
      await waitFor(
        'the owner in the resource labels',
        () =>
          h.provider.calls.relabel > 0 &&
          res &&
          h.provider.instances().find((r) => r.ref === moved.providerRef)!.labels['studiopool:owner'] === 'q1',
      )
      assert.equal(h.provider.instances().find((r) => r.ref === moved.providerRef)!.instanceId, q1)
      assert.equal((await h.store.getInstance(q2))!.state, 'queued', 'the second waits: the pool is full')
      app.open()
      await waitFor(
        'the handed-over instance to be ready',
        async () => (await h.store.getInstance(q1))!.state === 'ready',
      )
      assert.equal(h.provider.calls.create, creates, 'no instance was made for the queue')
      // The worker does not reap the handed-over resource as an orphan of the ended free row.
      await h.worker.runOnce()
      await h.pool.drain()
      assert.equal(h.provider.instances().find((r) => r.ref === moved.providerRef)!.state === 'terminated', false)
      // A session is deleted while a free ready instance sits beside the queue: the free one goes to q2, nothing is launched.
      const spareId = newInstanceId()
      const spareRes = h.provider.addUnknown({ instanceId: spareId, template: 'demo' })
      await h.store.insertInstance({
        id: spareId,
        template: 'demo',
        state: 'ready',
        ownerId: null,
        keyName: null,
        providerRef: spareRes.ref,
        address: app.url,
        createdAt: now,
        updatedAt: now,
        startedAt: now,
        readyAt: now,
        progress: 100,
        progressMessage: 'ready',
      })
      await h.pool.release(a.instance.id, 'user')
      await h.pool.drain()
      const q2row = (await h.store.getInstance(q2))!
      assert.equal(q2row.state, 'ready')
      assert.equal(q2row.providerRef, spareRes.ref, 'q2 got the ready free instance')
      assert.equal(h.provider.calls.create, creates, 'no instance was launched for the queue')
      const live = await h.store.listInstances({ states: LIVE_STATES })
      assert.equal(new Set(live.map((i) => i.ownerId)).size, live.length)
    })
  })
}
