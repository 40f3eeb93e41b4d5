/**
 * The store's record of users' use of shared instances (docs/cost.md "Shared templates"), on both
 * stores: adds accumulate per (instance, bucket, user) — also from two writers at once and in
 * batches larger than one statement — the first writer's template and groups stay, and reads
 * filter by bucket and instance.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createStoreFromUrl } from '../../src/store/sql-store.js'
import type { SharedUse } from '../../src/domain/cost-segment.js'
import { STORE_KINDS } from '../helpers/stores.js'

const B = 300_000
const use = (over: Partial<SharedUse>): SharedUse => ({
  instanceId: 'i1',
  template: 'board',
  bucket: B,
  userId: 'alice',
  groups: ['lab'],
  weight: 1,
  ms: 1000,
  ...over,
})

for (const kind of STORE_KINDS) {
  describe(`shared usage on ${kind.name}`, () => {
    test('adds accumulate per instance, bucket and user; two writers at once lose nothing', async () => {
      const url = await kind.freshUrl()
      const a = await createStoreFromUrl(url, { poolId: 'test' })
      const b = await createStoreFromUrl(url, { poolId: 'test' })
      try {
        await a.sharedUsage.add([use({}), use({ userId: 'bob', groups: [] })])
        await Promise.all([
          ...Array.from({ length: 10 }, () => a.sharedUsage.add([use({ weight: 2, ms: 500, groups: ['other'] })])),
          ...Array.from({ length: 10 }, () => b.sharedUsage.add([use({ weight: 3, ms: 250 })])),
        ])
        await a.sharedUsage.add([use({ bucket: 2 * B }), use({ instanceId: 'i2' })])
        const rows = await b.sharedUsage.list({ from: B, to: 2 * B, instanceId: 'i1' })
        assert.deepEqual(
          rows.map((r) => [r.userId, r.weight, r.ms, r.groups]),
          [
            ['alice', 1 + 20 + 30, 1000 + 5000 + 2500, ['lab']],
            ['bob', 1, 1000, []],
          ],
        )
        assert.equal((await a.sharedUsage.list({})).length, 4)
        assert.equal((await a.sharedUsage.list({ from: 2 * B })).length, 1)
      } finally {
        await a.close()
        await b.close()
      }
    })

    test('a batch larger than one statement', async () => {
      const s = await kind.make()
      const many = Array.from({ length: 500 }, (_, i) => use({ userId: `u${i}`, weight: i + 1 }))
      await s.sharedUsage.add(many)
      await s.sharedUsage.add(many)
      const rows = await s.sharedUsage.list({ instanceId: 'i1' })
      assert.equal(rows.length, 500)
      assert.equal(
        rows.reduce((n, r) => n + r.weight, 0),
        2 * ((500 * 501) / 2),
      )
    })
  })
}
