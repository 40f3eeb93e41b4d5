/**
 * Cost retention (`cost.retain`, docs/cost.md "Retention"), on both stores: the worker's once-a-minute
 * step deletes cost segments and shared-usage rows older than the retention of instances whose rows
 * are gone, and keeps everything a live or retained instance's accrual and the reports inside the
 * retention read; `0` keeps every row.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { newInstanceId } from '../../src/domain/ids.js'
import type { NewSegment } from '../../src/domain/cost-segment.js'
import type { Store } from '../../src/store/store.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { appServer, makeHarness } from '../pool/harness.js'

const app = await appServer()
after(() => app.close())

const DAY = 86_400_000
const NOW = Date.UTC(2027, 11, 1, 12, 0, 0)

const yaml = (retain: string) => `
pool: { id: test, maxInstances: 5 }
cost: { retain: ${retain} }
worker: { retainEnded: 7d }
templates:
  demo: { provider: fake, minFree: 0, maxInstances: 5, healthPath: /, price: { onDemandPerHour: 1 } }
`

const segment = (instanceId: string, startedAt: number, endedAt: number | null): NewSegment => ({
  instanceId,
  template: 'demo',
  kind: 'assigned',
  userId: 'u1',
  keyName: 'lms',
  groups: [],
  market: 'on-demand',
  ratePerHour: 1,
  currency: 'USD',
  startedAt,
  endedAt,
})

/** Three instances with a segment and a shared-usage row each: gone and old, gone and recent, kept (its row is still there) and old. */
async function fixture(store: Store) {
  const goneOld = newInstanceId()
  const goneRecent = newInstanceId()
  const keptOld = newInstanceId()
  await store.insertInstance({ id: keptOld, template: 'demo', state: 'ready', ownerId: 'u1', keyName: 'lms' })
  const old = NOW - 500 * DAY
  const recent = NOW - 30 * DAY
  await store.writeCost({
    insert: [
      segment(goneOld, old, old + DAY),
      segment(goneRecent, recent, recent + DAY),
      segment(keptOld, old, old + DAY),
      segment(keptOld, old + DAY, null),
    ],
  })
  const use = (instanceId: string, bucket: number) => ({
    instanceId,
    template: 'demo',
    bucket,
    userId: 'u1',
    groups: [],
    weight: 1,
    ms: 1000,
  })
  await store.sharedUsage.add([use(goneOld, old), use(goneRecent, recent), use(keptOld, old)])
  return { goneOld, goneRecent, keptOld }
}

const ids = (rows: readonly { instanceId: string }[]) => new Set(rows.map((r) => r.instanceId))

for (const kind of STORE_KINDS) {
  describe(`cost retention on ${kind.name}`, () => {
    test('the worker deletes old rows of purged instances only; the default keeps 13 months', async () => {
      const h = makeHarness(await kind.make(), yaml('395d'), { appUrl: app.url, now: () => NOW })
      try {
        assert.equal(h.config.cost.retainMs, 395 * DAY)
        const f = await fixture(h.store)
        await h.worker.runOnce()
        const segs = ids(await h.store.listCostSegments())
        assert.deepEqual(segs, new Set([f.goneRecent, f.keptOld]), 'the old segment of a purged instance went')
        assert.equal(
          (await h.store.listCostSegments({ instanceId: f.keptOld })).length,
          2,
          'an instance still there keeps all',
        )
        const shared = ids(await h.store.sharedUsage.list({}))
        assert.deepEqual(shared, new Set([f.goneRecent, f.keptOld]))
        // Idempotent: nothing more to delete.
        assert.deepEqual(await h.store.purgeCost(NOW - 395 * DAY), { segments: 0, shared: 0 })
      } finally {
        await h.close()
      }
    })

    test('retain: 0 keeps every row', async () => {
      const h = makeHarness(await kind.make(), yaml('0'), { appUrl: app.url, now: () => NOW })
      try {
        const f = await fixture(h.store)
        await h.worker.runOnce()
        assert.deepEqual(ids(await h.store.listCostSegments()), new Set([f.goneOld, f.goneRecent, f.keptOld]))
        assert.equal((await h.store.sharedUsage.list({})).length, 3)
      } finally {
        await h.close()
      }
    })
  })
}
