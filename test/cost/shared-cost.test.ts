/**
 * Shared templates' cost attributed to their users (issue 14, docs/cost.md "Shared templates"),
 * with a controlled clock, through the real pool engine and worker on both stores: the gateway's
 * book (SharedBook, the same clock) reports seats or requests every 10 s; the instance's cost is
 * split among its users by their share (2:1 for twice the seat time, or twice the requests), the
 * time nobody used stays the template's idle cost, and the total stays rate × running time, also
 * after a restart. A user's hard budget counts their shared cost and then refuses them there.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { compileRoute, type CompiledRoute } from '../../src/gateway/route-table.js'
import { SharedBook } from '../../src/gateway/shared-book.js'
import type { Instance } from '../../src/domain/instance.js'
import { SHARE_BUCKET_MS } from '../../src/domain/cost-segment.js'
import { FakeProvider } from '../../src/providers/fake/index.js'
import { waitFor } from '../helpers/wait.js'
import { reopenable, STORE_KINDS } from '../helpers/stores.js'
import { appServer, makeHarness, settle } from '../pool/harness.js'

const app = await appServer()
after(() => app.close())

const MIN = 60_000
/** On a bucket's edge, so that the figures below are whole minutes of whole buckets. */
const T0 = Math.ceil(Date.UTC(2026, 11, 2, 9, 0, 0) / SHARE_BUCKET_MS) * SHARE_BUCKET_MS

const yaml = `
pool: { id: test, maxInstances: 10 }
cost:
  groups: { lab: [alice] }
budgets:
  - { scope: user, name: bob, amount: 1, mode: hard, period: month }
  - { scope: template, name: board, amount: 1000, mode: soft, period: month }
templates:
  board:
    mode: shared
    provider: fake
    minInstances: 1
    idleTimeout: 0
    healthPath: /
    price: { onDemandPerHour: 6 }
  api:
    mode: shared
    routing: per-request
    provider: fake
    minInstances: 1
    idleTimeout: 0
    healthPath: /
    price: { onDemandPerHour: 6 }
`

const line = (lines: readonly { key: string; cost: number }[], key: string) => lines.find((l) => l.key === key)?.cost
const near = (actual: number | undefined, want: number, what: string, within = 0.011) =>
  assert.ok(actual !== undefined && Math.abs(actual - want) <= within, `${what}: ${actual} ≈ ${want}`)

function routeOf(inst: Instance): CompiledRoute {
  return compileRoute({
    instanceId: inst.id,
    ownerId: null,
    template: inst.template,
    state: 'ready',
    address: app.url,
    pathMode: 'strip',
    hostHeader: 'target',
    progress: 100,
    progressMessage: '',
    queuePosition: null,
    generation: inst.generation,
    failureReason: null,
    shared: { draining: false },
  })
}

for (const kind of STORE_KINDS) {
  describe(`shared cost on ${kind.name}`, () => {
    test('split by seat time and by requests, idle remainder to the template, total rate × time, budgets count it', async () => {
      let clock = T0
      const now = () => clock
      const open = await reopenable(kind)
      const provider = new FakeProvider({ poolId: 'test', settings: { address: app.url } })
      let h = makeHarness(await open(), yaml, { appUrl: app.url, provider, now })
      await settle(h)
      const ready = await waitFor('one ready instance of each shared template', async () => {
        const rows = await h.store.listInstances({ states: ['ready'] })
        return rows.length === 2 ? rows : undefined
      })
      const board = routeOf(ready.find((i) => i.template === 'board')!)
      const api = routeOf(ready.find((i) => i.template === 'api')!)
      const book = new SharedBook(now)
      // The gateway's report every 10 s of the clock (and at each event below); the pool's worker every minute.
      const advanceTo = async (at: number) => {
        while (clock < at) {
          clock = Math.min(at, clock + 10_000)
          h.pool.reportSharedLoad([book.load('board', [board], false), book.load('api', [api], true)])
          if ((clock - T0) % MIN === 0) await h.worker.runOnce()
        }
      }

      // board (sticky): alice seated from 10 to 50 min, then bob from 50 to 70: twice as long.
      await advanceTo(T0 + 10 * MIN)
      book.wsOpened(board, 'alice')
      // api (per-request), within one bucket from 20 min: alice 30 requests of 1 s, bob 15 of 3 s.
      await advanceTo(T0 + 20 * MIN)
      for (let i = 0; i < 30; i++) {
        book.began(api, 'alice')
        clock += 1_000
        book.ended(api)
        if (i % 2 === 0) {
          book.began(api, 'bob')
          clock += 3_000
          book.ended(api)
        }
        await advanceTo(clock + 5_000)
      }
      await advanceTo(T0 + 50 * MIN)
      book.wsOpened(board, 'bob')
      book.wsClosed(board, 'alice')
      await advanceTo(T0 + 70 * MIN)
      book.wsClosed(board, 'bob')
      await advanceTo(T0 + 90 * MIN)
      await settle(h)

      const r = await h.pool.cost.usage(T0, T0 + 90 * MIN)
      // Each instance ran 90 minutes at 6 an hour (0.1 a minute): 9 each, 18 in all.
      assert.equal(r.total, 18)
      near(line(r.byTemplate, 'board'), 9, 'board costs rate × time')
      near(line(r.byTemplate, 'api'), 9, 'api costs rate × time')
      // board: alice's 40 minutes (4.0) and bob's 20 (2.0); the 5 s seat held after each close is
      // split in its bucket by seat time (alice's 5 s beside bob's first 5 minutes: 0.008 more).
      const aliceBoard = 4.0
      const bobBoard = 2.0
      // api: busy 30 × 1 s + 15 × 3 s = 75 s (0.125), split by requests 30:15 — not by their length.
      const aliceApi = 0.125 * (2 / 3)
      const bobApi = 0.125 / 3
      const alice = aliceBoard + aliceApi
      const bob = bobBoard + bobApi
      near(line(r.byUser, 'alice'), alice, 'alice')
      near(line(r.byUser, 'bob'), bob, 'bob')
      near(line(r.byGroup, 'lab'), alice, "alice's group")
      assert.deepEqual(r.byRequester, [], 'shared time has no requester')
      near(r.shared, alice + bob, 'shared')
      near(r.idle, 18 - alice - bob, 'idle: the time nobody used')
      const boardLine = r.byTemplate.find((t) => t.key === 'board')!
      near(boardLine.idle, 9 - aliceBoard - bobBoard, "board's idle part")
      const ratio = (line(r.byUser, 'alice')! - aliceApi) / (line(r.byUser, 'bob')! - bobApi)
      assert.ok(ratio > 1.98 && ratio < 2.02, `alice's seat time cost twice bob's (${ratio})`)
      const apiUsers = await h.store.sharedUsage.list({ instanceId: api.entry.instanceId })
      assert.deepEqual(
        apiUsers.map((u) => [u.userId, u.weight]),
        [
          ['alice', 30],
          ['bob', 15],
        ],
        'requests counted per user, in one bucket row each',
      )

      // One user's view; reading again counts nothing twice.
      const mine = await h.pool.cost.usage(T0, T0 + 90 * MIN, { userId: 'bob' })
      assert.deepEqual(
        mine.byUser.map((l) => l.key),
        ['bob'],
      )
      near(mine.total, bob, "bob's own total")
      assert.deepEqual((await h.pool.cost.usage(T0, T0 + 90 * MIN)).byUser, r.byUser)

      // A period that cuts a bucket gets its part: to 32.5 minutes, alice's first 22.5 of board. (A
      // report's shares go to the bucket of its time: at a bucket's edge up to one report period,
      // 10 s here, lands in the next one, and what is over a bucket's running time is not counted.)
      const part = await h.pool.cost.usage(T0, T0 + 32.5 * MIN)
      near(line(part.byUser, 'alice'), 2.25 + aliceApi, "alice's first 32.5 minutes", 0.03)

      // Budgets: bob's shared cost (2.04) exceeds his hard budget of 1: refused at the shared template.
      await h.pool.cost.budgets.refresh(clock)
      const bobBudget = h.pool.cost.budgets.statuses(clock).find((s) => s.key === 'bob')!
      near(bobBudget.spend, bob, "bob's budget spend")
      assert.equal(bobBudget.state, 'exceeded')
      const boardBudget = h.pool.cost.budgets.statuses(clock).find((s) => s.key === 'board')!
      near(boardBudget.spend, 9, 'a template budget counts its whole cost once')
      assert.equal(h.pool.admit('board', 'bob', [])?.code, 'BUDGET_EXCEEDED')
      assert.equal(h.pool.admit('board', 'alice', ['lab']), null)

      // A restart over the same store: the figures stay.
      await h.close()
      h = makeHarness(await open(), yaml, { appUrl: app.url, provider, now })
      await settle(h)
      const again = await h.pool.cost.usage(T0, T0 + 90 * MIN)
      assert.equal(again.total, 18)
      assert.deepEqual(again.byUser, r.byUser)
      await h.close()
    })
  })
}
