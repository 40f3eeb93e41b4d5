/**
 * Issue 10: in the single-process role (`npm start`: API, worker and gateway in one process) the
 * gateway follows the pool's in-process route hub, so every change the worker finds must be
 * published there. A free instance that vanishes from the provider must leave the route table, and
 * an instance whose provider address changes must be routed to the new address.
 *
 * The route table is the gateway's own (RouteTable), fed from the server's hub through
 * `GET /api/v1/gateway/routes` — the same events the in-process gateway receives.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import pino from 'pino'
import { createRemoteRouteSource, type RemoteRouteSource } from '../../src/gateway/remote.js'
import { RouteTable } from '../../src/gateway/route-table.js'
import { FakeCloud } from '../../src/providers/fake/index.js'
import { dropSchemas } from '../helpers/pg.js'
import { command, startAppStub, startServer, STORES, waitFor, type TestServer } from '../api/helpers.js'

const appA = await startAppStub()
const appB = await startAppStub()
after(async () => {
  await appA.close()
  await appB.close()
  await dropSchemas()
})

for (const kind of STORES) {
  describe(`worker changes reach the gateway's route table in the single-process role (${kind})`, () => {
    const cloudName = `worker-routes-${randomBytes(4).toString('hex')}`
    let s: TestServer
    let source: RemoteRouteSource
    const table = new RouteTable()
    const cloud = () => FakeCloud.named(cloudName)
    const resourceOf = (id: string) => [...cloud().resources.values()].find((x) => x.instanceId === id)!
    const readyFree = () =>
      waitFor(
        'a ready free instance',
        async () => (await s.store.listInstances({ template: 'demo', assigned: false, states: ['ready'] }))[0],
        30_000,
      )

    before(async () => {
      // The worker runs (single-process role) but the test drives its cycles (runOnce).
      s = await startServer(
        kind,
        `worker: { interval: 1h }
providers: { fake: { cloud: ${cloudName} } }
templates:
  demo:
    provider: fake
    minFree: 1
    fake: { address: ${JSON.stringify(appA.url)} }
`,
      )
      source = createRemoteRouteSource({ serviceUrl: s.url, key: s.adminKey, log: pino({ level: 'silent' }) })
      await source.ready(30_000)
      table.follow(source)
    })
    after(async () => {
      table.close()
      source?.close()
      await s?.close()
      FakeCloud.drop(cloudName)
    })

    test('an assigned instance whose provider address changes is routed to the new address', async () => {
      const free = await readyFree()
      const r = await command(s.url, s.adminKey, 'REQUEST_SESSION', { userId: 'alice', template: 'demo' })
      assert.equal(r.status, 200, r.text)
      assert.equal((await s.store.getInstance(free.id))?.ownerId, 'alice')
      await waitFor('the session in the table', () => table.get(free.id)?.targetOrigin === appA.url, 30_000)

      // The resource comes back at another address (a cloud VM restarted elsewhere).
      resourceOf(free.id).address = appB.url
      await s.running.worker!.runOnce()
      assert.equal((await s.store.getInstance(free.id))?.address, appB.url, 'the store has the new address')
      await waitFor(
        'the route table to carry the new address',
        () => table.get(free.id)?.targetOrigin === appB.url,
        30_000,
      )
    })

    test('a free instance that vanishes from the provider leaves the route table', async () => {
      const free = await readyFree()
      await waitFor('the free instance in the table', () => table.get(free.id)?.entry.state === 'ready', 30_000)

      cloud().resources.delete(resourceOf(free.id).ref)
      await s.running.worker!.runOnce()
      assert.equal((await s.store.getInstance(free.id))?.state, 'terminated', 'the store ended it')
      await waitFor('the vanished free instance to leave the route table', () => !table.get(free.id), 30_000)
    })
  })
}
