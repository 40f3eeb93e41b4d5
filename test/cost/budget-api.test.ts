/**
 * Budgets and usage over HTTP, with the real server (src/main.ts start) on both stores: a hard
 * template budget that the warm pool's idle cost exceeds refuses REQUEST_SESSION (the seed's
 * command protocol) and POST /api/v1/sessions with 403 BUDGET_EXCEEDED naming the budget and the
 * spend, never a 500; GET /api/v1/usage shows the idle cost, the spend and the budget's state.
 * The price is set so high (1 per millisecond) that the budget is crossed within the first worker
 * cycles; the test waits on that condition, not on time.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { call, command, startAppStub, startServer, STORES, waitFor, type TestServer } from '../api/helpers.js'
import { dropSchemas } from '../helpers/pg.js'

after(dropSchemas)

const ARENA = 'arena-requester-key-0123456789'

for (const kind of STORES) {
  describe(`budgets over HTTP on ${kind}`, () => {
    let s: TestServer
    let app: Awaited<ReturnType<typeof startAppStub>>
    before(async () => {
      app = await startAppStub()
      const addr = JSON.stringify(app.url)
      s = await startServer(
        kind,
        `worker: { interval: 100ms }
budgets:
  - { scope: template, name: demo, label: demo monthly, amount: 100, mode: hard }
  - { scope: pool, amount: 1000000000, mode: soft }
templates:
  demo:
    provider: fake
    minFree: 1
    idleTimeout: 0
    price: { onDemandPerHour: 3600000 }
    fake: { address: ${addr} }
  free:
    provider: fake
    fake: { address: ${addr} }
`,
        { ARENA_POOL_SERVICE_KEY: ARENA },
      )
    })
    after(async () => {
      await s?.close()
      await app?.close()
    })

    test('the warm pool spends the template budget: REQUEST_SESSION and REST are refused 403 BUDGET_EXCEEDED', async () => {
      // Asked only once the usage report says so: a request before that would take the warm instance.
      await waitFor(
        'the demo budget to be exceeded',
        async () => {
          const u = await call(s.url, 'GET', '/api/v1/usage', { key: s.adminKey })
          return u.json?.budgets?.some(
            (b: { label: string; state: string }) => b.label === 'demo monthly' && b.state === 'exceeded',
          )
        },
        20_000,
        50,
      )
      const refused = await command(s.url, ARENA, 'REQUEST_SESSION', { userId: 'student-1', template: 'demo' })
      assert.equal(refused.status, 403, refused.text)
      assert.equal(refused.json.error.code, 'BUDGET_EXCEEDED')
      assert.match(
        refused.json.error.message,
        /budget "demo monthly" is exceeded for template "demo": spent [\d.]+ USD of 100\.00 USD/,
      )
      assert.equal(refused.text.includes(' at '), false, 'no stack trace')
      const rest = await call(s.url, 'POST', '/api/v1/sessions', {
        key: ARENA,
        body: { userId: 'student-2', template: 'demo' },
      })
      assert.equal(rest.status, 403, rest.text)
      assert.equal(rest.json.error.code, 'BUDGET_EXCEEDED')
      // Another template is not covered.
      const other = await command(s.url, ARENA, 'REQUEST_SESSION', { userId: 'student-1', template: 'free' })
      assert.equal(other.status, 200, other.text)
    })

    test('GET /api/v1/usage: idle cost apart, by template, and the budgets with spend and state (admin only)', async () => {
      const u = await call(s.url, 'GET', '/api/v1/usage', { key: s.adminKey })
      assert.equal(u.status, 200, u.text)
      assert.equal(u.json.currency, 'USD')
      assert.ok(u.json.idle > 100, `idle ${u.json.idle}`)
      const demo = u.json.byTemplate.find((t: { key: string }) => t.key === 'demo')
      assert.ok(demo.idle > 100)
      const b = u.json.budgets.find((x: { label: string }) => x.label === 'demo monthly')
      assert.equal(b.state, 'exceeded')
      assert.equal(b.scope, 'template')
      assert.equal(b.name, 'demo')
      assert.ok(b.spend >= 100)
      const pool = u.json.budgets.find((x: { scope: string }) => x.scope === 'pool')
      assert.equal(pool.state, 'ok')
      const denied = await call(s.url, 'GET', '/api/v1/usage', { key: ARENA })
      assert.equal(denied.status, 403)
      const bad = await call(s.url, 'GET', '/api/v1/usage?from=2026-12-02&to=2026-12-01', { key: s.adminKey })
      assert.equal(bad.status, 400)
      assert.equal(bad.json.error.code, 'INVALID_REQUEST')
    })
  })
}
