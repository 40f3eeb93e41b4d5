/**
 * The accrual planner (src/cost/accrual.ts) on the cases the pool test does not reach: an instance
 * that started and ended between two worker passes, one that never left the queue, a suspension
 * and its resume, and a pass repeated over its own output (nothing more to write).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { plan, type AccrualInput, type AccruingInstance, type CostSegment } from '../../src/cost/accrual.js'

const M = 60_000
const inst = (o: Partial<AccruingInstance>): AccruingInstance => ({
  id: 'i1',
  template: 't',
  state: 'ready',
  createdAt: 0,
  updatedAt: 0,
  startedAt: 0,
  endedAt: null,
  tags: {},
  ...o,
})
const input = (o: Partial<AccrualInput>): AccrualInput => ({
  instance: inst({}),
  open: undefined,
  lastEnd: null,
  assignments: [],
  price: (m) => (m === 'spot' ? 1 : 4),
  currency: 'USD',
  market: 'on-demand',
  groupsOf: (u) => (u === 'u1' ? ['g'] : []),
  now: 60 * M,
  ...o,
})

/** Applies plans to an in-memory ledger, as the store does, so passes can be repeated. */
function ledger() {
  const segs: CostSegment[] = []
  let id = 0
  return {
    segs,
    run(i: Omit<AccrualInput, 'open' | 'lastEnd'>) {
      const open = segs.find((s) => s.endedAt === null)
      const ends = segs.filter((s) => s.endedAt !== null).map((s) => s.endedAt!)
      const p = plan({ ...i, open, lastEnd: ends.length ? Math.max(...ends) : null })
      if (p.close)
        Object.assign(
          segs.find((s) => s.id === p.close!.id)!,
          { endedAt: p.close.endedAt },
        )
      if (p.drop)
        segs.splice(
          segs.findIndex((s) => s.id === p.drop!.id),
          1,
        )
      for (const n of p.insert) segs.push({ ...n, id: ++id })
      return p
    },
    view: () => segs.map((s) => [s.kind, s.userId, s.startedAt / M, s.endedAt === null ? null : s.endedAt / M]),
  }
}

test('an instance that started, was assigned and ended between two passes gets its whole chain, once', () => {
  const l = ledger()
  const i = input({
    instance: inst({ state: 'terminated', startedAt: 5 * M, endedAt: 50 * M }),
    assignments: [{ userId: 'u1', keyName: 'k', startedAt: 20 * M, endedAt: 50 * M }],
  })
  l.run(i)
  assert.deepEqual(l.view(), [
    ['idle', null, 5, 20],
    ['assigned', 'u1', 20, 50],
  ])
  assert.deepEqual(l.segs[1]!.groups, ['g'])
  const again = l.run({ ...i, now: 90 * M })
  assert.deepEqual(again, { insert: [] }, 'a second pass writes nothing')
})

test('an instance that never left the queue costs nothing', () => {
  const p = plan(input({ instance: inst({ state: 'terminated', startedAt: null, endedAt: 10 * M }) }))
  assert.deepEqual(p, { insert: [] })
  assert.deepEqual(plan(input({ instance: inst({ state: 'queued', startedAt: null }) })), { insert: [] })
})

test('suspended time is not charged; the resume starts a new segment', () => {
  const l = ledger()
  const who = [{ userId: 'u1', keyName: 'k', startedAt: 0, endedAt: null }]
  l.run(input({ instance: inst({ startedAt: 0 }), assignments: who, now: 10 * M }))
  l.run(input({ instance: inst({ state: 'suspended', updatedAt: 30 * M }), assignments: who, now: 40 * M }))
  l.run(input({ instance: inst({ state: 'suspended', updatedAt: 30 * M }), assignments: who, now: 50 * M }))
  l.run(input({ instance: inst({ state: 'starting', startedAt: 60 * M }), assignments: who, now: 70 * M }))
  assert.deepEqual(l.view(), [
    ['assigned', 'u1', 0, 30],
    ['assigned', 'u1', 60, null],
  ])
})

test('an instance ended while suspended is not charged for its suspension', () => {
  const l = ledger()
  const open = [{ userId: 'u1', keyName: 'k', startedAt: 0, endedAt: null }]
  const closed = [{ ...open[0]!, endedAt: 80 * M }]
  l.run(input({ instance: inst({ startedAt: 0 }), assignments: open, now: 10 * M }))
  l.run(input({ instance: inst({ state: 'suspended', updatedAt: 30 * M }), assignments: open, now: 40 * M }))
  const ended = inst({ state: 'terminated', updatedAt: 80 * M, endedAt: 80 * M })
  l.run(input({ instance: ended, assignments: closed, now: 90 * M }))
  l.run(input({ instance: ended, assignments: closed, now: 100 * M }))
  assert.deepEqual(l.view(), [['assigned', 'u1', 0, 30]])
})

test('an instance resumed and then ended between two passes is charged from the resume to its end', () => {
  const l = ledger()
  const open = [{ userId: 'u1', keyName: 'k', startedAt: 0, endedAt: null }]
  l.run(input({ instance: inst({ startedAt: 0 }), assignments: open, now: 10 * M }))
  l.run(input({ instance: inst({ state: 'suspended', updatedAt: 30 * M }), assignments: open, now: 40 * M }))
  const ended = inst({ state: 'terminated', startedAt: 50 * M, updatedAt: 80 * M, endedAt: 80 * M })
  l.run(input({ instance: ended, assignments: [{ ...open[0]!, endedAt: 80 * M }], now: 90 * M }))
  assert.deepEqual(l.view(), [
    ['assigned', 'u1', 0, 30],
    ['assigned', 'u1', 50, 80],
  ])
})

test('a spot instance is priced and recorded on spot; its market tag overrides the template', () => {
  const p = plan(input({ market: 'spot' }))
  assert.equal(p.insert[0]!.market, 'spot')
  assert.equal(p.insert[0]!.ratePerHour, 1)
  const tagged = plan(input({ market: 'spot', instance: inst({ tags: { market: 'on-demand' } }) }))
  assert.equal(tagged.insert[0]!.market, 'on-demand')
  assert.equal(tagged.insert[0]!.ratePerHour, 4)
})
