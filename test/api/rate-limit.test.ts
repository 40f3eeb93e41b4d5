import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from './helpers.js'

test('a requester key over auth.rateLimit gets 429 RATE_LIMITED with Retry-After; admin keys are not limited', async () => {
  const server = await startServer(
    'sqlite',
    `auth: { rateLimit: 5 }\ntemplates:\n  demo: { provider: fake, minFree: 0, fake: { address: 'http://127.0.0.1:9' } }\n`,
  )
  after(() => server.close())
  const { running, adminKey } = server
  const app = running.app!
  const created = await app.inject({
    method: 'POST',
    url: '/api/v1/keys',
    headers: { authorization: `Bearer ${adminKey}` },
    payload: { name: 'portal', role: 'requester' },
  })
  const key = created.json().key as string
  const statuses: number[] = []
  let retryAfter: string | undefined
  for (let i = 0; i < 15; i++) {
    const r = await app.inject({
      method: 'POST',
      url: '/api/commands',
      headers: { authorization: `Bearer ${key}` },
      payload: { command: 'GET_STATUS', payload: {} },
    })
    statuses.push(r.statusCode)
    if (r.statusCode === 429) {
      assert.equal(r.json().error.code, 'RATE_LIMITED')
      retryAfter = r.headers['retry-after'] as string
    }
  }
  assert.equal(statuses.filter((s) => s === 200).length, 10, `a burst of twice the rate passes: ${statuses.join(',')}`)
  assert.equal(statuses.filter((s) => s === 429).length, 5)
  assert.ok(Number(retryAfter) >= 1)
  for (let i = 0; i < 15; i++) {
    const r = await app.inject({ method: 'GET', url: '/api/v1/pool', headers: { authorization: `Bearer ${adminKey}` } })
    assert.equal(r.statusCode, 200)
  }
})
