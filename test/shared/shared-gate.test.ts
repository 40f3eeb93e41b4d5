/**
 * Schedules and budgets apply to shared templates' visitors (issue 14, docs/shared-pools.md
 * "Schedules, budgets and cost"): outside an `unavailable` schedule a new visitor gets 503
 * OUTSIDE_SCHEDULE with Retry-After (the page for browsers); under an exceeded hard budget 403
 * BUDGET_EXCEEDED; WebSockets the same statuses; nothing is started for them.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { waitFor } from '../helpers/wait.js'
import { fetchLogin } from '../web/helpers.js'
import { CLOSED_SCHEDULE, census, startSharedServer, wsStatus, type SharedServer } from './harness.js'

describe('shared templates: schedules and budgets refuse new visitors', () => {
  let app: Server
  let s: SharedServer

  before(async () => {
    app = createServer((_req, res) => res.end('ok'))
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
    const address = `http://127.0.0.1:${(app.address() as AddressInfo).port}`
    const shared = { mode: 'shared', provider: 'fake', idleTimeout: 0, healthPath: '/', fake: { address } }
    s = await startSharedServer(
      {
        closed: {
          ...shared,
          schedule: CLOSED_SCHEDULE,
        },
        // 1,000 a second while an instance runs: the hard budget of 1 is spent at once.
        paid: { ...shared, minInstances: 1, price: { onDemandPerHour: 3_600_000 } },
      },
      { budgets: [{ scope: 'template', name: 'paid', label: 'paid app', amount: 1, mode: 'hard' }] },
    )
  })

  after(async () => {
    await s?.close()
    await new Promise<void>((r) => app.close(() => r()))
  })

  test('outside an unavailable schedule: 503 OUTSIDE_SCHEDULE with Retry-After, the page for browsers, nothing started', async () => {
    const cookie = await fetchLogin(s.url, 'ada')
    const api = await fetch(`${s.url}/a/closed/`, { headers: { cookie } })
    assert.equal(api.status, 503)
    const body = (await api.json()) as { error: { code: string; message: string } }
    assert.equal(body.error.code, 'OUTSIDE_SCHEDULE')
    assert.match(body.error.message, /outside its schedule; the next opening is \d{4}-/)
    assert.ok(Number(api.headers.get('retry-after')) > 0, 'Retry-After names the opening')
    const page = await fetch(`${s.url}/a/closed/`, { headers: { cookie, accept: 'text/html' } })
    assert.equal(page.status, 503)
    assert.match(await page.text(), /Not available now[\s\S]*outside its schedule/)
    assert.equal(await wsStatus(`${s.url.replace('http', 'ws')}/a/closed/ws`, cookie), 503)
    assert.equal(census(await s.shared('closed')).total, 0, 'nothing runs outside the window')
  })

  test('a hard budget exceeded: 403 BUDGET_EXCEEDED for a new visitor, HTTP and WebSocket', async () => {
    const cookie = await fetchLogin(s.url, 'bob')
    const refused = await waitFor(
      'the paid template to refuse a visitor',
      async () => {
        const r = await fetch(`${s.url}/a/paid/`, { headers: { cookie } })
        const text = await r.text()
        return r.status === 403 ? text : undefined
      },
      30_000,
      100,
    )
    const body = JSON.parse(refused) as { error: { code: string; message: string } }
    assert.equal(body.error.code, 'BUDGET_EXCEEDED')
    assert.match(body.error.message, /paid app/)
    const page = await fetch(`${s.url}/a/paid/`, { headers: { cookie, accept: 'text/html' } })
    assert.equal(page.status, 403)
    assert.match(await page.text(), /Budget reached/)
    assert.equal(await wsStatus(`${s.url.replace('http', 'ws')}/a/paid/ws`, cookie), 403)
  })
})
