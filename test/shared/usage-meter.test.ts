/**
 * The gateway's meter of shared instances' use (issue 14, docs/shared-pools.md "Cost"), with a
 * controlled clock: sticky templates report each user's seat-milliseconds and the time anyone was
 * seated, per-request ones each user's requests and the time a request was in flight; each report
 * carries what happened since the previous one and nothing twice; a new generation of an instance
 * does not lose the old one's last period.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { RouteEntry } from '../../src/domain/routes.js'
import { compileRoute, type CompiledRoute } from '../../src/gateway/route-table.js'
import { RECONNECT_MS, SharedBook } from '../../src/gateway/shared-book.js'

const MIN = 60_000

function route(id: string, template: string, generation = 0): CompiledRoute {
  const entry: RouteEntry = {
    instanceId: id,
    ownerId: null,
    template,
    state: 'ready',
    address: 'http://127.0.0.1:1',
    pathMode: 'strip',
    hostHeader: 'target',
    progress: 100,
    progressMessage: '',
    queuePosition: null,
    generation,
    failureReason: null,
    shared: { draining: false },
  }
  return compileRoute(entry)
}

const weights = (load: ReturnType<SharedBook['load']>, id: string) =>
  Object.fromEntries(load.shares?.find((s) => s.id === id)?.users.map((u) => [u.userId, u.weight]) ?? [])

test('sticky: seat-milliseconds per user and the busy time, since the last report only', () => {
  let clock = 1_000_000
  const book = new SharedBook(() => clock)
  const r = route('i-1', 'app')
  book.wsOpened(r, 'alice')
  clock += 10 * MIN
  book.wsOpened(r, 'bob')
  clock += 5 * MIN
  book.wsClosed(r, 'bob')
  clock += MIN
  const first = book.load('app', [r], false)
  assert.deepEqual(weights(first, 'i-1'), { alice: 16 * MIN, bob: 5 * MIN + RECONNECT_MS })
  assert.equal(first.shares?.[0]?.busyMs, 16 * MIN, 'busy while anyone was seated, not the sum of seats')
  assert.equal(first.shares?.[0]?.generation, 0)

  clock += 2 * MIN
  book.wsClosed(r, 'alice')
  clock += 10 * MIN
  const second = book.load('app', [r], false)
  assert.deepEqual(weights(second, 'i-1'), { alice: 2 * MIN + RECONNECT_MS }, 'only what happened since')
  assert.equal(second.shares?.[0]?.busyMs, 2 * MIN + RECONNECT_MS, 'nobody seated after the reconnect hold')
  clock += MIN
  assert.deepEqual(book.load('app', [r], false).shares, [], 'an empty instance reports no shares')
})

test('a user pinned by a page load whose WebSocket never opens holds a seat for the pin only', () => {
  let clock = 0
  const book = new SharedBook(() => clock)
  const r = route('i-2', 'app')
  book.pin(r, 'carol')
  clock += 5 * MIN
  const load = book.load('app', [r], false)
  assert.deepEqual(weights(load, 'i-2'), { carol: 30_000 })
  assert.equal(load.shares?.[0]?.busyMs, 30_000)
})

test('per-request: requests per user, busy while a request is in flight; a lost report is lost', () => {
  let clock = 0
  const book = new SharedBook(() => clock)
  const r = route('i-3', 'api')
  for (let i = 0; i < 4; i++) {
    book.began(r, 'alice')
    clock += 1_000
    book.ended(r)
  }
  book.began(r, 'bob')
  book.began(r, 'alice')
  clock += 3_000
  book.ended(r)
  book.ended(r)
  clock += 60_000
  const load = book.load('api', [r], true)
  assert.deepEqual(weights(load, 'i-3'), { alice: 5, bob: 1 })
  assert.equal(load.shares?.[0]?.busyMs, 7_000, 'two overlapping requests are busy once')
  // The next report starts from nothing: what the lost one carried is not sent again.
  assert.deepEqual(book.load('api', [r], true).shares, [])
  // A request still in flight at a report is busy up to it, and the rest of it in the next one, still its user's.
  book.began(r, 'bob')
  clock += 2_000
  const during = book.load('api', [r], true)
  assert.equal(during.shares?.[0]?.busyMs, 2_000)
  assert.deepEqual(weights(during, 'i-3'), { bob: 1 })
  clock += 1_000
  book.ended(r)
  const after = book.load('api', [r], true)
  assert.equal(after.shares?.[0]?.busyMs, 1_000)
  assert.deepEqual(weights(after, 'i-3'), { bob: 0 }, "the rest of bob's request goes with him; counted once")
})

test("a new generation of an instance: the old one's last period is still reported, apart", () => {
  let clock = 0
  const book = new SharedBook(() => clock)
  const old = route('i-4', 'app', 1)
  book.wsOpened(old, 'dave')
  clock += MIN
  const fresh = route('i-4', 'app', 2)
  book.wsOpened(fresh, 'erin')
  clock += MIN
  const load = book.load('app', [fresh], false)
  const byGen = new Map(load.shares?.map((s) => [s.generation, s]))
  assert.deepEqual(
    byGen.get(1)?.users.map((u) => [u.userId, u.weight]),
    [['dave', MIN]],
  )
  assert.deepEqual(
    byGen.get(2)?.users.map((u) => [u.userId, u.weight]),
    [['erin', MIN]],
  )
})
