/**
 * Cost accrual with a controlled clock, through the real pool engine and worker, on both stores
 * (a real SQLite file, a real Postgres schema) with the fake provider: free time is the template's
 * idle cost, assigned time the user's (their requester's, their groups'); spot and on-demand are
 * recorded apart; a price change mid-session splits the segment at the change; and a restart of
 * the server (a new pool over the same store, the instances still running) counts nothing twice.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { FakeProvider } from '../../src/providers/fake/index.js'
import { waitFor } from '../helpers/wait.js'
import { reopenable, STORE_KINDS } from '../helpers/stores.js'
import { appServer, makeHarness, settle } from '../pool/harness.js'

const app = await appServer()
after(() => app.close())

const H = 3_600_000
const T0 = Date.UTC(2026, 11, 2, 9, 0, 0)

const yaml = (demoOnDemand: number) => `
pool: { id: test, maxInstances: 20 }
cost:
  currency: EUR
  groups: { physics: [u1], everyone: [u1, u2] }
templates:
  demo:
    provider: fake
    minFree: 1
    maxInstances: 5
    idleTimeout: 0
    maxLifetime: 0
    healthPath: /
    price: { onDemandPerHour: ${demoOnDemand}, spotPerHour: 0.5 }
  spotty:
    provider: fake
    minFree: 0
    maxInstances: 5
    idleTimeout: 0
    maxLifetime: 0
    healthPath: /
    price: { onDemandPerHour: 2, spotPerHour: 0.5, market: spot }
`

const line = (lines: readonly { key: string; cost: number }[], key: string) => lines.find((l) => l.key === key)?.cost

for (const kind of STORE_KINDS) {
  describe(`cost accrual on ${kind.name}`, () => {
    test('free vs assigned, spot vs on-demand, a price change mid-session, a restart: each hour counted once at its price', async () => {
      let clock = T0
      const now = () => clock
      const open = await reopenable(kind)
      // One fake cloud for both server lifetimes: the instances outlive the restart.
      const provider = new FakeProvider({ poolId: 'test', settings: { address: app.url } })

      let h = makeHarness(await open(), yaml(2), { appUrl: app.url, provider, now })
      await settle(h)
      await waitFor(
        'a warm demo instance',
        async () => (await h.store.listInstances({ states: ['ready'] })).length === 1,
      )
      const [warm] = await h.store.listInstances({ states: ['ready'] })

      // One hour free, then u1 takes it (a warm hit) and u2 starts a spot instance.
      clock += H
      const a = await h.pool.request({ userId: 'u1', template: 'demo', keyName: 'lms' })
      assert.equal(a.outcome, 'warm')
      assert.equal(a.instance.id, warm!.id)
      const b = await h.pool.request({ userId: 'u2', template: 'spotty', keyName: 'lms' })
      await h.pool.drain()
      clock += H / 2
      await settle(h)

      // Restart, with a new on-demand price for demo (2 → 3 per hour) from now on.
      await h.worker.stop()
      await h.pool.close()
      await h.store.close()
      h = makeHarness(await open(), yaml(3), { appUrl: app.url, provider, now })
      await settle(h)
      clock += H / 2
      await h.pool.release(a.instance.id, 'user')
      await h.pool.drain()
      for (let i = 0; i < 3; i++) await settle(h) // passes over the same instant write nothing more

      const r = await h.pool.cost.usage(T0, T0 + 10 * H)
      assert.equal(r.currency, 'EUR')
      // u1: 30 min at 2 + 30 min at 3 (the new price applies from the change, not back to the start).
      assert.equal(line(r.byUser, 'u1'), 2.5)
      // u2: one hour on spot at 0.5 (still running: counted up to now).
      assert.equal(line(r.byUser, 'u2'), 0.5)
      assert.equal(line(r.byMarket, 'spot'), 0.5)
      assert.equal(line(r.byRequester, 'lms'), 3)
      assert.equal(line(r.byGroup, 'physics'), 2.5)
      assert.equal(line(r.byGroup, 'everyone'), 3)
      // Idle: the first hour of u1's instance (2), and the warm one made after the claim, from T0+1h:
      // 30 min at 2 and 30 min at 3 (2.5). Idle cost is the template's, no user's.
      assert.equal(r.idle, 4.5)
      const demo = r.byTemplate.find((t) => t.key === 'demo')!
      assert.equal(demo.idle, 4.5)
      assert.equal(demo.cost, 7)
      assert.equal(r.total, 7.5)

      // The segments of u1's instance: free, assigned at 2, assigned at 3 (split at the restart's price change), on-demand.
      const segs = (await h.store.listCostSegments({ instanceId: a.instance.id })).map((s) => ({
        kind: s.kind,
        user: s.userId,
        rate: s.ratePerHour,
        market: s.market,
        from: (s.startedAt - T0) / 60_000,
        to: s.endedAt === null ? null : (s.endedAt - T0) / 60_000,
      }))
      assert.deepEqual(segs, [
        { kind: 'idle', user: null, rate: 2, market: 'on-demand', from: 0, to: 60 },
        { kind: 'assigned', user: 'u1', rate: 2, market: 'on-demand', from: 60, to: 90 },
        { kind: 'assigned', user: 'u1', rate: 3, market: 'on-demand', from: 90, to: 120 },
      ])
      const spot = await h.store.listCostSegments({ instanceId: b.instance.id })
      assert.deepEqual(
        spot.map((s) => [s.kind, s.market, s.ratePerHour, s.endedAt]),
        [['assigned', 'spot', 0.5, null]],
      )

      // Another restart at the same instant: nothing is counted again.
      await h.worker.stop()
      await h.pool.close()
      await h.store.close()
      h = makeHarness(await open(), yaml(3), { appUrl: app.url, provider, now })
      await settle(h)
      const again = await h.pool.cost.usage(T0, T0 + 10 * H)
      assert.equal(again.total, 7.5)
      assert.equal(line(again.byUser, 'u1'), 2.5)
      // Later, only the running ones go on: u2's spot instance and the warm demo one.
      clock += H
      await settle(h)
      const later = await h.pool.cost.usage(T0, T0 + 10 * H)
      assert.equal(line(later.byUser, 'u1'), 2.5)
      assert.equal(line(later.byUser, 'u2'), 1)
      assert.equal(later.idle, 4.5 + 3)
      await h.close()
    })
  })
}
