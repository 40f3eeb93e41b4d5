/**
 * A soft budget's warning reaches the webhooks (issue 13: "an event for webhooks"): a session whose
 * spend passes `warnAt` is announced to a subscribed receiver as a signed `budget.warning`, naming
 * the budget, whom it counts and the spend. Real server, real worker, SQLite, a real HTTP receiver.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { verifyWebhook } from '../../src/domain/webhooks.js'
import { command, startAppStub, startServer, waitFor, type TestServer } from '../api/helpers.js'

const SECRET = 'whsec-budget-0123456789abcdef'
const REQUESTER = 'budget-requester-key-0123456789'

let app: Awaited<ReturnType<typeof startAppStub>>
let s: TestServer
let srv: Server
const hits: { headers: Record<string, string | string[] | undefined>; body: string }[] = []

before(async () => {
  srv = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += String(c)))
    req.on('end', () => {
      hits.push({ headers: req.headers, body })
      res.writeHead(204)
      res.end()
    })
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/hook`
  app = await startAppStub()
  s = await startServer(
    'sqlite',
    `worker: { interval: 100ms }
auth:
  keys:
    - { name: portal, role: requester, key: ${REQUESTER} }
cost: { currency: USD }
budgets:
  - { scope: user, amount: 1, period: month, mode: soft, warnAt: 0.5 }
webhooks:
  - { name: portal, url: ${JSON.stringify(url)}, secret: ${SECRET}, events: [budget.warning], retryBaseMs: 50, retryMaxMs: 100 }
templates:
  demo:
    provider: fake
    minFree: 1
    pricePerHour: 3600
    fake: { address: ${JSON.stringify(app.url)} }
`,
  )
})
after(async () => {
  await s?.close()
  await app?.close()
  await new Promise<void>((r) => (srv.closeAllConnections(), srv.close(() => r())))
})

test('a soft budget passing warnAt sends a signed budget.warning to the webhook', async () => {
  await waitFor(
    'a warm demo instance',
    async () => (await s.store.listInstances({ template: 'demo', assigned: false, states: ['ready'] })).length === 1,
    10_000,
  )
  const r = await command(s.url, REQUESTER, 'REQUEST_SESSION', { userId: 'alice', template: 'demo' })
  assert.equal(r.status, 200, r.text)
  // 3600 an hour is 1 a second: the 0.5 warning comes within a few worker cycles.
  await waitFor('the budget.warning delivery', () => hits.length > 0, 20_000)
  const hit = hits[0]!
  assert.equal(hit.headers['studiopool-event'], 'budget.warning')
  assert.ok(verifyWebhook(SECRET, String(hit.headers['studiopool-signature']), hit.body))
  assert.ok(!verifyWebhook('another-secret-0123456789', String(hit.headers['studiopool-signature']), hit.body))
  const event = JSON.parse(hit.body) as {
    type: string
    data: { key: string; spend: number; budget: { amount: number } }
  }
  assert.equal(event.type, 'budget.warning')
  assert.equal(event.data.key, 'alice')
  assert.equal(event.data.budget.amount, 1)
  assert.ok(event.data.spend >= 0.5, `spend ${event.data.spend}`)
})
