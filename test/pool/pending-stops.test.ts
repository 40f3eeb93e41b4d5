/**
 * Pending stops (issue 13) with a controlled clock, over a real SQLite file and the fake provider:
 * what the warning says (when, why, whether within the lead time), that "keep working" moves the
 * idle stop and the worker then does not cull at the old deadline, that the worker culls at the
 * deadline the warning showed (not before), and that registered deadline sources (budgets,
 * schedules) take part: the earliest wins, a failing source is skipped.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { waitFor } from '../helpers/wait.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { appServer, makeHarness, type Harness } from './harness.js'

const app = await appServer()
after(() => app.close())

const MIN = 60_000
const yaml = (idle: string, life: string) => `
pool: { id: test, maxInstances: 10 }
widget: { warnBefore: 5m }
templates:
  demo: { provider: fake, minFree: 0, maxInstances: 5, idleTimeout: ${idle}, maxLifetime: ${life}, healthPath: / }
`

const sqlite = STORE_KINDS.find((k) => k.name === 'sqlite')!

async function readySession(h: Harness, userId: string): Promise<string> {
  const r = await h.pool.request({ userId, keyName: 'test' })
  await h.pool.drain()
  await waitFor('the session to be ready', async () => (await h.store.getInstance(r.instance.id))?.state === 'ready')
  return r.instance.id
}

describe('pending stops', () => {
  test('the idle stop: due at the last activity plus the timeout, warned within the lead time; keep working moves it and the worker does not cull at the old deadline', async () => {
    let t = Date.UTC(2026, 0, 5, 9, 0, 0)
    const h = makeHarness(await sqlite.make(), yaml('30m', '12h'), { appUrl: app.url, now: () => t })
    try {
      const start = t
      const id = await readySession(h, 'ana')
      let s = await h.pool.stopStatus(id)
      assert.deepEqual(s?.pendingStop, { reason: 'idle', at: start + 30 * MIN })
      assert.equal(s?.warn, false, 'not warned 30 minutes ahead with a 5 minute lead time')
      assert.equal(s?.canKeepWorking, true)
      assert.equal(s?.canSuspend, true, 'the fake provider can suspend')

      t = start + 26 * MIN
      s = await h.pool.stopStatus(id)
      assert.equal(s?.warn, true, 'warned 4 minutes before the cull')
      assert.equal(s!.pendingStop!.at - s!.now, 4 * MIN)

      s = await h.pool.keepWorking(id)
      assert.deepEqual(s?.pendingStop, { reason: 'idle', at: t + 30 * MIN })
      assert.equal(s?.warn, false, 'the warning goes once the user keeps working')

      t = start + 31 * MIN // past the old deadline
      await h.worker.runOnce()
      assert.equal((await h.store.getInstance(id))?.state, 'ready', 'not culled at the old deadline')

      t = start + 26 * MIN + 30 * MIN - 1
      await h.worker.runOnce()
      assert.equal(
        (await h.store.getInstance(id))?.state,
        'ready',
        'not culled a millisecond before the deadline shown',
      )
      t += 1
      await h.worker.runOnce()
      await h.pool.drain()
      const ended = await h.store.getInstance(id)
      assert.notEqual(ended?.state, 'ready', 'culled at the deadline shown')
      assert.equal(ended?.endReason, 'idle')
      assert.equal(await h.pool.stopStatus(id).then((x) => x?.pendingStop ?? null), null)
    } finally {
      await h.close()
    }
  })

  test('the lifetime stop when it comes first: keep working cannot help; a registered source earlier still wins; a failing source is skipped', async () => {
    let t = Date.UTC(2026, 0, 5, 9, 0, 0)
    const h = makeHarness(await sqlite.make(), yaml('30m', '20m'), { appUrl: app.url, now: () => t })
    try {
      const start = t
      const id = await readySession(h, 'bo')
      let s = await h.pool.stopStatus(id)
      assert.deepEqual(s?.pendingStop, { reason: 'lifetime', at: start + 20 * MIN })
      assert.equal(s?.canKeepWorking, false)

      const failing = h.pool.pendingStops.register('broken', () => {
        throw new Error('no prices')
      })
      const budget = h.pool.pendingStops.register('budget', (inst) =>
        inst.ownerId === 'bo' ? { reason: 'budget', at: start + 10 * MIN } : null,
      )
      t = start + 7 * MIN
      s = await h.pool.stopStatus(id)
      assert.deepEqual(s?.pendingStop, { reason: 'budget', at: start + 10 * MIN })
      assert.equal(s?.warn, true)
      assert.equal(s?.canKeepWorking, false)

      budget()
      failing()
      s = await h.pool.stopStatus(id)
      assert.deepEqual(s?.pendingStop, { reason: 'lifetime', at: start + 20 * MIN }, 'unregistered again')

      t = start + 20 * MIN
      await h.worker.runOnce()
      await h.pool.drain()
      assert.equal((await h.store.getInstance(id))?.endReason, 'lifetime')
    } finally {
      await h.close()
    }
  })

  test('activity written while the worker cycle runs (after it read the rows) keeps the session: the cull asks the deadline again', async () => {
    let t = Date.UTC(2026, 0, 5, 9, 0, 0)
    const h = makeHarness(await sqlite.make(), yaml('30m', '12h'), { appUrl: app.url, now: () => t })
    try {
      const id = await readySession(h, 'dee')
      t += 30 * MIN // due by the row the cycle reads first
      // The gateway's activity batch lands while the cycle asks the providers what runs.
      const list = h.provider.list.bind(h.provider)
      let wrote = false
      h.provider.list = async (opts) => {
        const out = await list(opts)
        if (!wrote) await h.store.recordActivity([{ id, at: t - 1000 }])
        wrote = true
        return out
      }
      await h.worker.runOnce()
      await h.pool.drain()
      assert.ok(wrote, 'the provider was listed during the cycle')
      const inst = await h.store.getInstance(id)
      assert.equal(inst?.state, 'ready', 'not culled: the user was active a second ago')
      assert.equal(inst?.ownerId, 'dee')

      t += 30 * MIN // idle since that activity: culled now
      await h.worker.runOnce()
      await h.pool.drain()
      assert.equal((await h.store.getInstance(id))?.endReason, 'idle')
    } finally {
      await h.close()
    }
  })

  test('no timeouts: nothing is pending and nothing is warned', async () => {
    const t = Date.UTC(2026, 0, 5, 9, 0, 0)
    const h = makeHarness(await sqlite.make(), yaml('0', '0'), { appUrl: app.url, now: () => t })
    try {
      const id = await readySession(h, 'cy')
      const s = await h.pool.stopStatus(id)
      assert.equal(s?.pendingStop, null)
      assert.equal(s?.warn, false)
      assert.equal(await h.pool.stopStatus('nosuchinstanceid00000000'), undefined)
    } finally {
      await h.close()
    }
  })
})
