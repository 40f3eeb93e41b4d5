/**
 * Schedules applied by the worker through the pool, with a controlled clock (issue 13): outside the
 * windows of an `unavailable` schedule new sessions are refused with OUTSIDE_SCHEDULE and the next
 * opening, and the pool holds nothing free; ahead of an opening the pool warms up by the measured
 * start time; at the closing free instances are stopped and assigned ones kept; the next morning it
 * comes back. On both stores, the fake provider, a real HTTP app for the readiness probe.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { AppError } from '../../src/domain/errors.js'
import { FREE_STATES } from '../../src/domain/instance.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { FORECAST_META_PREFIX } from '../../src/pool/pool-warm.js'
import { forecastSection } from '../../src/web/forecast-section.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { waitFor } from '../helpers/wait.js'
import { appServer, makeHarness, type Harness } from '../pool/harness.js'

const ownPool = () => `t-${newInstanceId().slice(0, 10)}`
const at = (iso: string) => Date.parse(iso)

const yaml = (pool: string) => `
pool: { id: ${pool}, maxInstances: 20 }
worker: { interval: 5s }
templates:
  shiny:
    provider: fake
    minFree: 0
    maxInstances: 10
    startTimeout: 60s
    idleTimeout: 0
    maxLifetime: 0
    healthPath: /
    schedule:
      timezone: Europe/Berlin
      windows: [{ days: mon-fri, from: '08:00', to: '18:00', minFree: 2 }]
      outside: unavailable
  lab:
    provider: fake
    minFree: 1
    maxInstances: 10
    healthPath: /
    warmPool: { mode: forecast-only, lookback: 14d, min: 0, max: 6, timezone: Europe/Berlin }
`

for (const kind of STORE_KINDS) {
  describe(`schedules through the pool, on ${kind.name}`, () => {
    const harnesses: Harness[] = []
    const apps: Awaited<ReturnType<typeof appServer>>[] = []
    after(async () => {
      for (const h of harnesses) await h.close()
      for (const a of apps) await a.close()
    })

    test('scale to zero outside the window, warm ahead of the opening, trim at the closing, back the next morning', async () => {
      const app = await appServer()
      apps.push(app)
      let now = at('2026-01-19T06:30:00Z') // Monday 07:30 CET
      const h = makeHarness(await kind.make({ poolId: ownPool() }), yaml(ownPool()), {
        appUrl: app.url,
        now: () => now,
      })
      harnesses.push(h)
      const free = () => h.store.countInstances({ template: 'shiny', assigned: false, states: FREE_STATES })

      await h.worker.runOnce()
      assert.equal(await free(), 0, 'nothing warm before the window')
      await assert.rejects(h.pool.request({ userId: 'u1', template: 'shiny', keyName: 'test' }), (err: AppError) => {
        assert.equal(err.code, 'OUTSIDE_SCHEDULE')
        assert.equal(err.statusCode, 503)
        assert.match(err.message, /the next opening is 2026-01-19T07:00:00\.000Z/)
        assert.equal(err.retryAfter, 30 * 60)
        return true
      })

      // 07:59:30: within the lead (nothing measured yet: the start timeout, 60 s, plus one cycle).
      now = at('2026-01-19T06:59:30Z')
      await h.worker.runOnce()
      await waitFor(
        'two instances warmed ahead of the opening',
        async () => (await h.store.countInstances({ template: 'shiny', assigned: false, states: ['ready'] })) === 2,
      )
      await assert.rejects(h.pool.request({ userId: 'u1', template: 'shiny', keyName: 'test' }), /outside its schedule/)

      now = at('2026-01-19T07:00:00Z') // 08:00: open
      const r = await h.pool.request({ userId: 'u1', template: 'shiny', keyName: 'test' })
      assert.equal(r.outcome, 'warm')
      assert.equal(r.instance.state, 'ready')
      await h.worker.runOnce()
      await waitFor(
        'the warm pool refilled to 2',
        async () => (await h.store.countInstances({ template: 'shiny', assigned: false, states: ['ready'] })) === 2,
      )

      now = at('2026-01-19T17:00:00Z') // 18:00: closed
      await h.worker.runOnce()
      await waitFor('free instances stopped at the closing', async () => (await free()) === 0)
      await h.pool.drain()
      const mine = await h.store.getInstance(r.instance.id)
      assert.equal(mine?.state, 'ready', 'the assigned session is kept')
      const trimmed = (await h.store.listInstances({ template: 'shiny', states: ['terminated'] })).filter(
        (i) => i.endReason === 'schedule',
      )
      assert.equal(trimmed.length, 2)
      await assert.rejects(
        h.pool.request({ userId: 'u2', template: 'shiny', keyName: 'test' }),
        (err: AppError) => err.code === 'OUTSIDE_SCHEDULE' && /2026-01-20T07:00:00\.000Z/.test(err.message),
      )

      // Tuesday: now the start time is measured (milliseconds on the fake), so the lead is about one
      // 5 s cycle: at 07:59:30 nothing is warmed yet, at 07:59:57 the window's floor applies.
      now = at('2026-01-20T06:59:30Z')
      await h.worker.runOnce()
      assert.equal(await free(), 0, 'not warmed earlier than the measured start time')
      now = at('2026-01-20T06:59:57Z')
      await h.worker.runOnce()
      await waitFor(
        'warm again the next morning',
        async () => (await h.store.countInstances({ template: 'shiny', assigned: false, states: ['ready'] })) === 2,
      )
      now = at('2026-01-20T07:00:00Z')
      assert.equal((await h.pool.request({ userId: 'u2', template: 'shiny', keyName: 'test' })).outcome, 'warm')
    })

    test('forecast-only: the forecast is computed and recorded, the pool keeps the template’s own minFree', async () => {
      const app = await appServer()
      apps.push(app)
      const now = at('2026-01-19T08:00:00Z') // Monday 09:00 CET
      const h = makeHarness(await kind.make({ poolId: ownPool() }), yaml(ownPool()), {
        appUrl: app.url,
        now: () => now,
      })
      harnesses.push(h)
      // Two earlier Mondays with 30 sessions starting within the 9:00 hour.
      for (const week of [1, 2])
        for (let i = 0; i < 30; i++) {
          const id = newInstanceId()
          const start = now - week * 7 * 86_400_000 + i * 60_000
          await h.store.openAssignment({
            instanceId: id,
            template: 'lab',
            userId: `u${i}`,
            keyName: 'test',
            startedAt: start,
          })
          await h.store.closeAssignment(id, start + 3_600_000, 'user', null)
        }
      await h.worker.runOnce()
      const target = h.pool.warmTargets().get('lab')
      assert.ok(target && target.predicted !== null && target.predicted >= 2, `predicted ${target?.predicted}`)
      assert.equal(target.applied, false)
      assert.equal(target.minFree, 1, 'not applied: the template’s minFree holds')
      await waitFor(
        'one warm instance',
        async () => (await h.store.countInstances({ template: 'lab', assigned: false, states: ['ready'] })) === 1,
      )
      const recorded = JSON.parse((await h.store.getMeta(FORECAST_META_PREFIX + 'lab')) ?? '[]')
      assert.equal(recorded.length, 1)
      assert.ok(recorded[0].arrivals >= 20, `forecast arrivals ${recorded[0].arrivals}`)
      // The admin dashboard's chart: the forecast beside the actual sessions of the hour.
      await h.pool.request({ userId: 'today', template: 'lab', keyName: 'test' })
      const html = await forecastSection(h.config, h.store, h.pool, now)
      assert.match(html, /<svg[^>]*aria-label="lab: sessions started per hour/)
      assert.match(html, /08:00 UTC: 1 started, forecast \d+(\.\d)?, warm \d+/)
      assert.match(html, /not applied/)
    })
  })
}
