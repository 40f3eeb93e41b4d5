/**
 * The cost accrual's batches (src/pool/cost-accrual.ts), on both stores: the steps of many
 * instances share one transaction and one read per table, and what each instance gets is what its
 * own step wrote before: one instance whose writes fail holds back no other (its segment comes on a
 * later pass), and an instance that ended gets its segment closed once, whatever its neighbours in
 * the batch.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { loadConfig } from '../../src/config/load.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { CostAccrual, priceBookOf } from '../../src/pool/cost-accrual.js'
import type { CostWrite, Store, StoreTx } from '../../src/store/store.js'
import { STORE_KINDS } from '../helpers/stores.js'

const H = 3_600_000
const T0 = Date.UTC(2026, 11, 2, 9, 0, 0)
const config = loadConfig({
  text: `
pool: { id: test, maxInstances: 200 }
cost: { currency: EUR }
templates:
  demo:
    provider: fake
    minFree: 0
    maxInstances: 200
    price: { onDemandPerHour: 2 }
`,
  env: {},
  cwd: '/tmp',
})

/** The store, with every cost write of one instance failing (inside transactions, where the accrual writes). */
function failingFor(store: Store, bad: string): Store {
  const wrapTx = (tx: StoreTx): StoreTx =>
    new Proxy(tx, {
      get(target, prop, recv) {
        if (prop === 'writeCost')
          return (w: CostWrite) => {
            if (w.insert.some((s) => s.instanceId === bad)) return Promise.reject(new Error('disk says no'))
            return target.writeCost(w)
          }
        const v = Reflect.get(target, prop, recv) as unknown
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
      },
    })
  return new Proxy(store, {
    get(target, prop, recv) {
      if (prop === 'transaction')
        return <T>(fn: (tx: StoreTx) => Promise<T>) => target.transaction((tx) => fn(wrapTx(tx)))
      const v = Reflect.get(target, prop, recv) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    },
  })
}

for (const kind of STORE_KINDS) {
  describe(`cost accrual batches on ${kind.name}`, () => {
    test('60 instances over two batches: one failing instance holds back no other, ended ones closed once', async () => {
      const store = await kind.make({ poolId: 'test' })
      after(() => store.close())
      const ids: string[] = []
      for (let i = 0; i < 60; i++) {
        const id = newInstanceId()
        ids.push(id)
        await store.insertInstance({
          id,
          template: 'demo',
          state: 'ready',
          ownerId: null,
          keyName: null,
          providerRef: `ref-${i}`,
          address: 'http://127.0.0.1:9',
          createdAt: T0 + i,
          updatedAt: T0 + i,
          startedAt: T0 + i,
          readyAt: T0 + i,
        })
      }
      const bad = ids[7]!
      const log = pino({ level: 'silent' })
      const deps = { config, log, prices: priceBookOf(config), groupsOf: () => [] }
      const failing = new CostAccrual({ ...deps, store: failingFor(store, bad) })
      assert.equal(await failing.sync(T0 + H), 59)
      const open = await store.listCostSegments({ open: true })
      assert.equal(open.length, 59)
      assert.ok(!open.some((s) => s.instanceId === bad), 'the failing instance has no segment yet')
      assert.ok(open.every((s) => s.kind === 'idle' && s.ratePerHour === 2))

      // Two instances end; the next pass (the failure gone) closes them and catches the failing one up.
      const ended = [ids[3]!, ids[55]!]
      for (const id of ended)
        await store.updateInstance(id, { state: 'terminated', endedAt: T0 + 2 * H, updatedAt: T0 + 2 * H })
      const accrual = new CostAccrual({ ...deps, store })
      assert.equal(await accrual.sync(T0 + 3 * H), 3)
      for (const id of ended) {
        const segs = await store.listCostSegments({ instanceId: id })
        assert.deepEqual(
          segs.map((s) => s.endedAt),
          [T0 + 2 * H],
          'closed at its end',
        )
      }
      const late = await store.listCostSegments({ instanceId: bad })
      assert.deepEqual(
        late.map((s) => [s.kind, s.startedAt, s.endedAt]),
        [['idle', T0 + 7, null]],
        'from its start: nothing lost',
      )
      // Passes over the same instant, and later ones, write nothing twice for the ended instances.
      assert.equal(await accrual.sync(T0 + 3 * H), 0)
      assert.equal(await new CostAccrual({ ...deps, store }).sync(T0 + 4 * H), 0)
      for (const id of ended) assert.equal((await store.listCostSegments({ instanceId: id })).length, 1)
      const r = await store.listCostSegments({})
      assert.equal(r.length, 60)
    })
  })
}
