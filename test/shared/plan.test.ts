/**
 * The shared pools' scale decision (src/domain/shared.ts planShared), with a controlled clock:
 * start by load factor, drain the least loaded after the cool-down, end drained instances when
 * empty or after the grace, scale to zero after the idle time, recycle with the replacement first.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { planShared, type PlanInput, type PlanInstance, type SharedSettings } from '../../src/domain/shared.js'

const S: SharedSettings = {
  routing: 'sticky',
  minInstances: 0,
  maxConnectionsPerInstance: 10,
  loadFactor: 0.5,
  scaleInCooldownMs: 60_000,
  drainGraceMs: 600_000,
  queueSize: 100,
  queueTimeoutMs: 30_000,
  recycleAfterRequests: 0,
  recycleAfterMs: 0,
}
const T0 = 1_800_000_000_000

function inst(id: string, over: Partial<PlanInstance> = {}): PlanInstance {
  return {
    id,
    state: 'ready',
    startedAt: T0 - 1000,
    readyAt: T0 - 500,
    lastActivityAt: T0,
    drainingSince: null,
    ...over,
  }
}

function input(over: Partial<PlanInput> & { conns?: Record<string, number>; waiting?: number }): PlanInput {
  const now = over.now ?? T0
  const instances = over.instances ?? []
  const conns = over.conns ?? {}
  return {
    now,
    settings: over.settings ?? S,
    minInstances: over.minInstances ?? 0,
    maxInstances: over.maxInstances ?? 20,
    idleTimeoutMs: over.idleTimeoutMs ?? 300_000,
    maxLifetimeMs: over.maxLifetimeMs ?? 0,
    instances,
    load: over.load ?? {
      template: 't',
      at: now,
      instances: instances.map((i) => ({ id: i.id, connections: conns[i.id] ?? 0, requests: 0 })),
      waiting: over.waiting ?? 0,
      queued: 0,
      maxQueueWaitMs: 0,
    },
    overSince: over.overSince ?? null,
  }
}

describe('planShared', () => {
  test('30 users at 10 per instance and load factor 0.5 want 6 instances; they start at once', () => {
    const p = planShared(input({ instances: [inst('a')], conns: { a: 10 }, waiting: 20 }))
    assert.equal(p.desired, 6)
    assert.equal(p.start, 5)
    assert.deepEqual(p.drain, [])
  })

  test('the caps bound the size: maxInstances above, minInstances below', () => {
    assert.equal(planShared(input({ waiting: 100, maxInstances: 4 })).desired, 4)
    const idle = planShared(input({ minInstances: 2, instances: [], now: T0 + 10 * 60_000 }))
    assert.equal(idle.desired, 2)
    assert.equal(idle.start, 2)
  })

  test('fewer users: the least loaded drain only after the cool-down, starting ones end first', () => {
    const instances = [inst('a'), inst('b'), inst('c', { state: 'starting', readyAt: null }), inst('d')]
    const conns = { a: 4, b: 1, d: 3 }
    const first = planShared(input({ instances, conns }))
    assert.equal(first.desired, 2)
    assert.deepEqual(first.drain, [], 'no drain before the cool-down')
    assert.equal(first.overSince, T0)
    const early = planShared(input({ instances, conns, now: T0 + 59_000, overSince: first.overSince }))
    assert.deepEqual(early.drain, [])
    const later = planShared(input({ instances, conns, now: T0 + 60_000, overSince: first.overSince }))
    assert.deepEqual(later.end, [{ id: 'c', reason: 'scale-in' }], 'the one not serving anyone yet ends at once')
    assert.deepEqual(later.drain, [{ id: 'b', reason: 'scale-in' }], 'then the least loaded ready one drains')
    assert.equal(later.overSince, null)
  })

  test('a load spike in the cool-down resets it', () => {
    const instances = [inst('a'), inst('b')]
    const p = planShared(input({ instances, conns: { a: 10, b: 10 }, overSince: T0 - 30_000 }))
    assert.equal(p.overSince, null)
    assert.equal(p.start, 2)
  })

  test('a draining instance ends when its last connection closes, or after the grace', () => {
    const d = inst('d', { drainingSince: T0 - 1000 })
    const busy = planShared(input({ instances: [inst('a'), d], conns: { a: 2, d: 1 } }))
    assert.deepEqual(busy.end, [], 'a user is still on it')
    const empty = planShared(input({ instances: [inst('a'), d], conns: { a: 2, d: 0 } }))
    assert.deepEqual(empty.end, [{ id: 'd', reason: 'scale-in' }])
    const graceOver = planShared(input({ instances: [inst('a'), d], conns: { a: 2, d: 1 }, now: T0 + 600_000 }))
    assert.deepEqual(graceOver.end, [{ id: 'd', reason: 'scale-in' }])
  })

  test('nobody for the idle time: everything drains at once (scale to zero); before it, nothing', () => {
    const old = { readyAt: T0 - 400_000 }
    const instances = [
      inst('a', { ...old, lastActivityAt: T0 - 299_000 }),
      inst('b', { ...old, lastActivityAt: T0 - 310_000 }),
    ]
    const soon = planShared(input({ instances }))
    assert.equal(soon.desired, 1, 'used 299 s ago: not idle yet, the minimum of one while in use')
    const idle = planShared(input({ instances, now: T0 + 2000 }))
    assert.equal(idle.desired, 0)
    assert.deepEqual(
      idle.drain.map((x) => x.reason),
      ['idle', 'idle'],
    )
  })

  test('without a fresh report nothing is drained for want of load', () => {
    const p = planShared(input({ instances: [inst('a'), inst('b')], load: undefined as never }))
    assert.equal(p.drain.length, 0)
  })

  test('recycling: the replacement starts first, the old one drains once another is ready', () => {
    const settings = { ...S, recycleAfterRequests: 1000 }
    const old = inst('old')
    const load = (ids: string[]) => ({
      template: 't',
      at: T0,
      instances: ids.map((id) => ({ id, connections: 2, requests: id === 'old' ? 1000 : 5 })),
      waiting: 0,
      queued: 0,
      maxQueueWaitMs: 0,
    })
    const p1 = planShared(input({ settings, instances: [old], load: load(['old']) }))
    assert.equal(p1.start, 1, 'a replacement starts')
    assert.deepEqual(p1.drain, [], 'the old one serves until the replacement is ready')
    const starting = inst('new', { state: 'starting', readyAt: null })
    const p2 = planShared(input({ settings, instances: [old, starting], load: load(['old', 'new']) }))
    assert.equal(p2.start, 0)
    assert.deepEqual(p2.drain, [])
    const p3 = planShared(input({ settings, instances: [old, inst('new')], load: load(['old', 'new']) }))
    assert.deepEqual(p3.drain, [{ id: 'old', reason: 'recycle' }])
    const aged = planShared(input({ instances: [old], maxLifetimeMs: 500, conns: { old: 1 } }))
    assert.equal(aged.start, 1, 'maxLifetime recycles too')
  })
})
