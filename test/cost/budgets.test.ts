/**
 * Budgets with a controlled clock, through the real pool engine and worker, on both stores, with
 * the fake provider: a soft budget warns (audit event, subscriber) at its threshold and when
 * exceeded, and refuses nothing; a hard budget refuses new sessions with 403 BUDGET_EXCEEDED the
 * moment the running spend crosses it (open segments count up to the request), still hands the
 * user their live session, and with `stopRunning` stops that session one grace after the worker
 * first saw it exceeded — `budgetStopAt` says when, meanwhile — and no earlier.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { AppError } from '../../src/domain/errors.js'
import type { BudgetEvent } from '../../src/pool/cost-service.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { appServer, makeHarness } from '../pool/harness.js'

const app = await appServer()
after(() => app.close())

const MIN = 60_000
const T0 = Date.UTC(2026, 11, 2, 9, 0, 0)

const yaml = `
pool: { id: test, maxInstances: 20 }
cost:
  groups: { physics: [u1] }
budgets:
  - { scope: user, amount: 5, period: month, mode: soft, warnAt: 0.5 }
  - { scope: user, name: u1, label: u1 monthly, amount: 10, period: month, mode: hard, stopRunning: { grace: 10m } }
templates:
  demo: { provider: fake, minFree: 0, maxInstances: 5, idleTimeout: 0, maxLifetime: 0, healthPath: /, price: { onDemandPerHour: 10 } }
  other: { provider: fake, minFree: 0, maxInstances: 5, idleTimeout: 0, maxLifetime: 0, healthPath: / }
`

async function refusal(p: Promise<unknown>): Promise<AppError> {
  try {
    await p
  } catch (err) {
    if (err instanceof AppError) return err
    throw err
  }
  assert.fail('the request was not refused')
}

for (const kind of STORE_KINDS) {
  describe(`budgets on ${kind.name}`, () => {
    test('soft warns, hard refuses BUDGET_EXCEEDED at once, the live session stays; stopRunning stops it after its grace', async () => {
      let clock = T0
      const now = () => clock
      const h = makeHarness(await kind.make(), yaml, { appUrl: app.url, now })
      after(() => h.close())
      const events: BudgetEvent[] = []
      h.pool.cost.onBudgetEvent((e) => events.push(e))
      const cycle = async () => {
        await h.worker.runOnce()
        await h.pool.drain()
      }
      const audits = async () =>
        (await h.store.listAudit({ limit: 100 })).map((e) => e.event).filter((e) => e.startsWith('budget.'))

      const s = await h.pool.request({ userId: 'u1', template: 'demo', keyName: 'lms' })
      await h.pool.drain()
      await cycle()

      // 20 min at 10/h = 3.33: over half of the soft 5 → one warning, nothing refused.
      clock = T0 + 20 * MIN
      await cycle()
      await cycle()
      assert.deepEqual(await audits(), ['budget.warning'])
      assert.equal(events.length, 1)
      assert.equal(events[0]!.type, 'budget.warning')
      assert.equal(events[0]!.key, 'u1')
      assert.equal(events[0]!.spend, 3.3333)

      // 31 min = 5.17: the soft budget is exceeded; new sessions still start.
      clock = T0 + 31 * MIN
      await cycle()
      assert.deepEqual(await audits(), ['budget.exceeded', 'budget.warning'])
      const o1 = await h.pool.request({ userId: 'u1', template: 'other', keyName: 'lms' })
      await h.pool.drain()
      await h.pool.release(o1.instance.id, 'user')

      // 59 min = 9.83 of the hard 10: still allowed.
      clock = T0 + 59 * MIN
      const o2 = await h.pool.request({ userId: 'u1', template: 'other', keyName: 'lms' })
      await h.pool.drain()
      await h.pool.release(o2.instance.id, 'user')
      await h.pool.drain()

      // 61 min = 10.17: refused on the next request, before any worker cycle ran, with the budget and the spend named.
      clock = T0 + 61 * MIN
      const err = await refusal(h.pool.request({ userId: 'u1', template: 'other', keyName: 'lms' }))
      assert.equal(err.code, 'BUDGET_EXCEEDED')
      assert.equal(err.statusCode, 403)
      assert.match(err.message, /budget "u1 monthly" is exceeded for user "u1": spent 10\.17 USD of 10\.00 USD/)
      // The live session is not a new one: it is handed back.
      const again = await h.pool.request({ userId: 'u1', template: 'demo', keyName: 'lms' })
      assert.equal(again.outcome, 'existing')
      assert.equal(again.instance.id, s.instance.id)
      // Another user is not covered by u1's hard budget.
      const u2 = await h.pool.request({ userId: 'u2', template: 'other', keyName: 'lms' })
      assert.equal(u2.outcome, 'cold')

      // The worker's cycle sees it exceeded: the stop is due one grace (10 min) later, and said so.
      assert.equal(h.pool.cost.budgetStopAt(s.instance), null, 'no stop is scheduled before the worker saw it')
      await cycle()
      assert.deepEqual(h.pool.cost.budgetStopAt(s.instance), { at: T0 + 71 * MIN, reason: 'budget' })
      assert.ok((await audits()).includes('budget.stop-scheduled'))
      clock = T0 + 70 * MIN
      await cycle()
      assert.equal((await h.store.getInstance(s.instance.id))?.state, 'ready', 'not stopped before its grace')
      clock = T0 + 71 * MIN
      await cycle()
      const ended = await h.store.getInstance(s.instance.id)
      assert.ok(ended && ['stopping', 'terminated'].includes(ended.state), ended?.state)
      const [hist] = await h.store.listHistory({ instanceId: s.instance.id })
      assert.equal(hist!.endReason, 'budget')
      assert.deepEqual(
        events.map((e) => e.type),
        ['budget.warning', 'budget.exceeded', 'budget.exceeded', 'budget.stop-scheduled', 'budget.stopped'],
      )
      // Still refused while the month lasts; the next month starts afresh.
      await refusal(h.pool.request({ userId: 'u1', template: 'other', keyName: 'lms' }))
      clock = Date.UTC(2027, 0, 1, 0, 1)
      await cycle()
      const next = await h.pool.request({ userId: 'u1', template: 'other', keyName: 'lms' })
      assert.equal(next.outcome, 'cold')
    })
  })
}
