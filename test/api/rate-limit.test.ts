import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { loadConfig } from '../../src/config/load.js'
import { start, type Running } from '../../src/main.js'
import { dropSchemas, freshPgUrl, PG_SKIP } from '../helpers/pg.js'
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

test('two replicas on one Postgres draw from one bucket per key, and answers carry RateLimit headers', async (t) => {
  if (PG_SKIP) return t.skip('no Postgres')
  const url = await freshPgUrl()
  const dirs: string[] = []
  const servers: Running[] = []
  t.after(async () => {
    for (const s of servers) await s.close()
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
    await dropSchemas()
  })
  const KEY = 'portal-requester-key-0123456789'
  for (let i = 0; i < 2; i++) {
    const dir = mkdtempSync(join(tmpdir(), 'sp-rate-'))
    dirs.push(dir)
    const config = loadConfig({
      text: `store: { driver: postgres, url: ${JSON.stringify(url)} }
auth: { rateLimit: 5, bootstrapAdmin: false }
worker: { interval: 1h }
templates:
  demo: { provider: fake, minFree: 0, fake: { address: 'http://127.0.0.1:9' } }
`,
      env: { ARENA_POOL_SERVICE_KEY: KEY },
      cwd: dir,
      overrides: { port: 0, dataDir: dir, logLevel: 'silent' },
    })
    servers.push(await start({ config, log: pino({ level: 'silent' }) }))
  }
  const t0 = performance.now()
  const answers: { server: number; status: number; headers: Record<string, unknown> }[] = []
  for (let i = 0; i < 30; i++) {
    const server = i % 2
    const r = await servers[server]!.app!.inject({
      method: 'POST',
      url: '/api/commands',
      headers: { authorization: `Bearer ${KEY}` },
      payload: { command: 'GET_STATUS', payload: {} },
    })
    answers.push({ server, status: r.statusCode, headers: r.headers })
  }
  const seconds = (performance.now() - t0) / 1000
  const allowed = answers.filter((a) => a.status === 200).length
  // One shared bucket: a burst of 10, plus what 5 a second refilled meanwhile. Two buckets would allow 20.
  assert.ok(allowed >= 10, `the burst passes: ${allowed}`)
  assert.ok(allowed <= 10 + Math.ceil(seconds * 5), `${allowed} allowed in ${seconds.toFixed(2)} s`)
  assert.ok(allowed < 20)
  for (const server of [0, 1]) assert.ok(answers.some((a) => a.server === server && a.status === 429))
  const first = answers[0]!.headers
  assert.equal(first['ratelimit-limit'], '10')
  assert.equal(first['ratelimit-remaining'], '9')
  assert.ok(Number(first['ratelimit-reset']) >= 1)
  const refused = answers.find((a) => a.status === 429)!.headers
  assert.equal(refused['ratelimit-remaining'], '0')
  assert.ok(Number(refused['retry-after']) >= 1)
})
