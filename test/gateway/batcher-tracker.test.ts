/** ActivityBatcher and ConnectionTracker (gateway/activity.ts, gateway/connections.ts), alone. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { pino } from 'pino'
import { ActivityBatcher } from '../../src/gateway/activity.js'
import { ConnectionTracker } from '../../src/gateway/connections.js'

const log = pino({ level: 'silent' })

test('one write per instance per flush, with its last time; a failed write is retried, never lost', async () => {
  const writes: { id: string; at: number }[][] = []
  let fail = false
  const results: string[] = []
  const b = new ActivityBatcher(
    {
      recordActivity: async (e) => {
        if (fail) throw new Error('store down')
        writes.push([...e])
      },
    },
    { activityWrite: (r) => void results.push(r) },
    log,
  )
  for (let i = 0; i < 1000; i++) b.touch(i % 2 ? 'a' : 'b')
  assert.equal(b.pending, 2)
  await b.flush()
  assert.equal(writes.length, 1)
  assert.deepEqual(writes[0]!.map((e) => e.id).sort(), ['a', 'b'])
  await b.flush()
  assert.equal(writes.length, 1, 'nothing new: no write')
  fail = true
  b.touch('c')
  await b.flush()
  assert.equal(b.pending, 1, 'kept for the next flush')
  fail = false
  await b.flush()
  assert.deepEqual(
    writes[1]!.map((e) => e.id),
    ['c'],
  )
  assert.deepEqual(results, ['ok', 'error', 'ok'])
})

test('a dropped instance closes its connections only; shutdown says goodbye to all', () => {
  const t = new ConnectionTracker()
  const events: string[] = []
  const conn = (name: string) => ({
    close: () => void events.push(`close ${name}`),
    goAway: () => void events.push(`bye ${name}`),
  })
  const a1 = conn('a1')
  t.track('a', a1)
  t.track('a', conn('a2'))
  t.track('b', conn('b1'))
  t.untrack('a', a1)
  assert.equal(t.count('a'), 1)
  t.goAway()
  assert.deepEqual(events.sort(), ['bye a2', 'bye b1'])
  events.length = 0
  assert.equal(t.closeInstance('a'), 1)
  assert.deepEqual(events, ['close a2'])
  assert.equal(t.closeInstance('a'), 0)
  t.closeAll()
  assert.deepEqual(events, ['close a2', 'close b1'])
})
