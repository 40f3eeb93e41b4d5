/**
 * The dashboard's cost panels, with the real server (SQLite) and the fake provider: a signed-in
 * user sees their own spend this month and the budgets that cover them, with a warning once one is
 * exceeded, and not another user's spend; an admin sees everyone's spend, idle cost apart, and
 * every budget.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { command, startAppStub, waitFor } from '../api/helpers.js'
import { fetchLogin, startServer, type TestServer } from '../web/helpers.js'

describe('cost on the dashboard', () => {
  let s: TestServer
  let app: Awaited<ReturnType<typeof startAppStub>>
  before(async () => {
    app = await startAppStub()
    s = await startServer(`
worker: { interval: 100ms }
dashboard: { login: dev, admins: [ada] }
budgets:
  - { scope: user, name: alice, label: alice monthly, amount: 1, mode: soft }
  - { scope: user, name: bob, label: bob monthly, amount: 50, mode: hard }
templates:
  demo:
    provider: fake
    minFree: 0
    idleTimeout: 0
    price: { onDemandPerHour: 36000 }
    fake: { address: ${JSON.stringify(app.url)} }
`)
  })
  after(async () => {
    await s?.close()
    await app?.close()
  })

  test("a user sees their own spend and budget (warned when exceeded), an admin everyone's", async () => {
    const r = await command(s.url, s.adminKey, 'REQUEST_SESSION', { userId: 'alice', template: 'demo' })
    assert.equal(r.status, 200, r.text)
    const alice = await fetchLogin(s.url, 'alice')
    // 36000 per hour is 10 per second: alice's budget of 1 goes within the first cycles.
    const page = await waitFor(
      "alice's budget shown as exceeded",
      async () => {
        const html = await (await fetch(`${s.url}/`, { headers: { cookie: alice } })).text()
        return html.includes('data-state="exceeded"') ? html : undefined
      },
      20_000,
      100,
    )
    assert.match(page, /My spending this month/)
    assert.match(page, /Budget “alice monthly” is exceeded\./)
    assert.match(page, /data-budget="alice monthly"/)
    assert.doesNotMatch(page, /bob monthly/, "another user's budget is not shown")

    const bob = await fetchLogin(s.url, 'bob')
    const bobPage = await (await fetch(`${s.url}/`, { headers: { cookie: bob } })).text()
    assert.match(bobPage, /data-budget="bob monthly" data-state="ok"/)
    assert.match(bobPage, /<strong class="js-spend">0\.00 USD<\/strong>/)

    const ada = await fetchLogin(s.url, 'ada')
    const admin = await (await fetch(`${s.url}/admin`, { headers: { cookie: ada } })).text()
    assert.match(admin, /Cost and budgets, this month/)
    assert.match(admin, /data-budget="alice monthly" data-state="exceeded"/)
    assert.match(admin, /data-budget="bob monthly" data-state="ok"/)
    assert.match(admin, /<td>alice<\/td><td class="num">[\d.]+<\/td><td class="num">[\d.]+ USD<\/td>/)
  })
})
