/**
 * A schedule on a shared template (issue 14 with issue 13; seed 003's 8–18 window), with a
 * controlled clock through the worker: before the window nothing runs (`outside: unavailable`),
 * within the lead ahead of the opening the window's `minFree` instances start, and after the
 * closing the pool goes back to zero. Both stores, the fake provider, a real app for the probe.
 */
import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'
import { newInstanceId } from '../../src/domain/ids.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { waitFor } from '../helpers/wait.js'
import { appServer, makeHarness, type Harness } from '../pool/harness.js'

const ownPool = () => `t-${newInstanceId().slice(0, 10)}`
const at = (iso: string) => Date.parse(iso)
const LIVE = ['queued', 'provisioning', 'starting', 'ready'] as const

const yaml = (pool: string) => `
pool: { id: ${pool}, maxInstances: 20 }
worker: { interval: 5s }
templates:
  bi:
    mode: shared
    provider: fake
    minInstances: 0
    maxInstances: 6
    maxConnectionsPerInstance: 10
    loadFactor: 0.5
    startTimeout: 60s
    idleTimeout: 0
    maxLifetime: 0
    healthPath: /
    schedule:
      timezone: Europe/Berlin
      windows: [{ days: mon-fri, from: '08:00', to: '18:00', minFree: 2, maxInstances: 4 }]
      outside: unavailable
`

for (const kind of STORE_KINDS) {
  describe(`a schedule on a shared template, on ${kind.name}`, () => {
    const harnesses: Harness[] = []
    const apps: Awaited<ReturnType<typeof appServer>>[] = []
    after(async () => {
      for (const h of harnesses) await h.close()
      for (const a of apps) await a.close()
    })

    test('zero outside the window, warmed ahead of the opening, back to zero after the closing', async () => {
      const app = await appServer()
      apps.push(app)
      let now = at('2026-01-19T06:30:00Z') // Monday 07:30 CET
      const pool = ownPool()
      const h = makeHarness(await kind.make({ poolId: pool }), yaml(pool), { appUrl: app.url, now: () => now })
      harnesses.push(h)
      const live = () => h.store.countInstances({ template: 'bi', states: [...LIVE] })
      const bounds = async () => {
        const s = (await h.pool.sharedStatus()).find((x) => x.template === 'bi')!
        return [s.minInstances, s.maxInstances]
      }

      await h.worker.runOnce()
      assert.equal(await live(), 0, 'nothing runs before the window')
      assert.deepEqual(await bounds(), [0, 0])

      // 07:59:30: within the lead (nothing measured yet: the start timeout, 60 s, plus one cycle).
      now = at('2026-01-19T06:59:30Z')
      await h.worker.runOnce()
      assert.deepEqual(await bounds(), [2, 4], "the window's bounds, ahead of it")
      const ready = () => h.store.countInstances({ template: 'bi', states: ['ready'] })
      await waitFor(
        'two instances warmed ahead of the opening',
        async () => {
          await h.worker.runOnce()
          return (await ready()) === 2
        },
        10_000,
      )

      // 18:00:30: closed. The gateway reports nobody connected; after the scale-in cool-down the
      // pool drains to nothing.
      const report = async () => {
        const ids = (await h.store.listInstances({ template: 'bi', states: [...LIVE] })).map((i) => i.id)
        h.pool.reportSharedLoad([
          {
            template: 'bi',
            at: now,
            instances: ids.map((id) => ({ id, connections: 0, requests: 0 })),
            waiting: 0,
            queued: 0,
            maxQueueWaitMs: 0,
          },
        ])
      }
      now = at('2026-01-19T17:00:30Z')
      assert.deepEqual(await bounds(), [0, 0])
      await report()
      await h.worker.runOnce()
      now += 5 * 60_000
      await waitFor(
        'the pool back to zero after the closing',
        async () => {
          await report()
          await h.worker.runOnce()
          return (await live()) === 0
        },
        20_000,
      )
      const ended = await h.store.listInstances({ template: 'bi' })
      assert.ok(
        ended.every((i) => i.state !== 'failed'),
        `drained, not failed: ${JSON.stringify(ended.map((i) => i.state))}`,
      )
    })
  })
}
