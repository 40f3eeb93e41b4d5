/**
 * Signed webhooks (issue 17): a receiver in the test gets session.ready then session.ended, signed
 * (HMAC-SHA256 over `timestamp.body`), in order; its first attempts fail, so the first event is
 * retried with growing delays and then delivered, and the second waits behind it. The delivery log
 * (`GET /api/v1/webhooks/deliveries`, admin) shows each attempt. Real server, SQLite and Postgres.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { loadConfig } from '../../src/config/load.js'
import { start } from '../../src/main.js'
import { verifyWebhook } from '../../src/domain/webhooks.js'
import { dropSchemas } from '../helpers/pg.js'
import { STORES, call, startAppStub, startServer, waitFor, type TestServer } from './helpers.js'

const SECRET = 'whsec-test-0123456789abcdef'
const REQUESTER = 'webhooks-requester-key-0123456789'

interface Hit {
  readonly at: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: string
  readonly answered: number
}

/** Answers 500 to its first `failures` requests, then 204; records every request. */
async function receiver(failures: number) {
  const hits: Hit[] = []
  let fail = failures
  const srv: Server = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += String(c)))
    req.on('end', () => {
      const answered = hits.length < fail ? 500 : 204
      hits.push({ at: Date.now(), headers: req.headers, body, answered })
      res.writeHead(answered)
      res.end()
    })
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/hook`,
    hits,
    succeedFromNow: () => (fail = hits.length),
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections()
        srv.close(() => r())
      }),
  }
}

after(dropSchemas)

/** Runs the CLI with STUDIOPOOL_KEY in its environment; resolves when it exits. */
function runCli(args: string[], key: string): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [new URL('../../bin/studiopool.js', import.meta.url).pathname, ...args], {
    env: { ...process.env, STUDIOPOOL_KEY: key },
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (c) => (out += String(c)))
  child.stderr.on('data', (c) => (err += String(c)))
  return new Promise((r) => child.on('close', (code) => r({ code, out, err })))
}

for (const kind of STORES) {
  describe(`webhooks (${kind})`, () => {
    let app: Awaited<ReturnType<typeof startAppStub>>
    let hook: Awaited<ReturnType<typeof receiver>>
    let s: TestServer

    before(async () => {
      app = await startAppStub()
      hook = await receiver(2)
      s = await startServer(
        kind,
        `worker: { interval: 1h }
auth:
  keys:
    - { name: portal, role: requester, key: ${REQUESTER} }
webhooks:
  - name: portal
    url: ${JSON.stringify(hook.url)}
    secret: env:PORTAL_WEBHOOK_SECRET
    events: [session.ready, session.ended]
    retryBaseMs: 100
    retryMaxMs: 2000
templates:
  demo:
    provider: fake
    fake: { address: ${JSON.stringify(app.url)} }
`,
        { PORTAL_WEBHOOK_SECRET: SECRET },
      )
    })
    after(async () => {
      await s?.close()
      await hook?.close()
      await app?.close()
    })

    test('signed events in order; failed attempts retried with backoff, then delivered; the log shows it', async () => {
      const grant = await call(s.url, 'POST', '/api/v1/sessions', {
        key: REQUESTER,
        body: { userId: 'ada', template: 'demo' },
      })
      assert.ok(grant.status < 300, grant.text)
      const id = (grant.json as { instanceId: string }).instanceId
      await waitFor('ready delivered', () => hook.hits.some((h) => h.answered === 204))
      const del = await call(s.url, 'DELETE', `/api/v1/instances/${id}?userId=ada`, { key: REQUESTER })
      assert.equal(del.status, 200, del.text)
      await waitFor('ended delivered', () => hook.hits.filter((h) => h.answered === 204).length === 2)

      const events = hook.hits.map(
        (h) => JSON.parse(h.body) as { id: string; type: string; data: { instanceId: string; reason?: string } },
      )
      // Three attempts of session.ready (two 500s, then 204), then session.ended once.
      assert.deepEqual(
        hook.hits.map((h, i) => `${events[i]!.type}:${h.answered}`),
        ['session.ready:500', 'session.ready:500', 'session.ready:204', 'session.ended:204'],
      )
      assert.equal(new Set(events.slice(0, 3).map((e) => e.id)).size, 1, 'a retry carries the same event id')
      assert.notEqual(events[3]!.id, events[0]!.id)
      assert.ok(events.every((e) => e.data.instanceId === id))
      assert.ok(events[3]!.data.reason, 'ended says why')
      // Backoff: at least the base, then at least twice the base.
      const gap1 = hook.hits[1]!.at - hook.hits[0]!.at
      const gap2 = hook.hits[2]!.at - hook.hits[1]!.at
      assert.ok(gap1 >= 100, `first retry after ≥ 100 ms (was ${gap1})`)
      assert.ok(gap2 >= 200, `second retry after ≥ 200 ms (was ${gap2})`)

      for (const h of hook.hits) {
        const sig = String(h.headers['studiopool-signature'])
        assert.equal(h.headers['studiopool-event-id'], (JSON.parse(h.body) as { id: string }).id)
        assert.ok(verifyWebhook(SECRET, sig, h.body), 'a good signature verifies')
        // A bad signature is detectable: another secret, a changed body, an old timestamp.
        assert.ok(!verifyWebhook('another-secret-0123456789', sig, h.body))
        assert.ok(!verifyWebhook(SECRET, sig, h.body.replace(id, 'x'.repeat(id.length))))
        assert.ok(!verifyWebhook(SECRET, sig, h.body, Math.floor(Date.now() / 1000) + 3600))
        assert.ok(!verifyWebhook(SECRET, 'nonsense', h.body))
      }

      const log = await call(s.url, 'GET', '/api/v1/webhooks/deliveries?webhook=portal', { key: s.adminKey })
      assert.equal(log.status, 200, log.text)
      const rows = (
        log.json as { deliveries: { event: string; status: string; attempts: number; lastStatus: number }[] }
      ).deliveries
      assert.deepEqual(
        rows.map((r) => [r.event, r.status, r.attempts, r.lastStatus]),
        [
          ['session.ended', 'delivered', 1, 204],
          ['session.ready', 'delivered', 3, 204],
        ],
      )
      // The CLI shows the same log (a real child process of bin/studiopool.js).
      const cli = await runCli(['webhooks', 'deliveries', '--url', s.url, '--webhook', 'portal'], s.adminKey)
      assert.equal(cli.code, 0, cli.err)
      const lines = cli.out.trim().split('\n')
      assert.equal(lines[0], 'seq\twebhook\tevent\tstatus\tattempts\tlast\terror')
      assert.match(lines[1]!, /\tportal\tsession\.ended\tdelivered\t1\t204\t?$/)
      assert.match(lines[2]!, /\tportal\tsession\.ready\tdelivered\t3\t204\t?$/)
      const forbidden = await call(s.url, 'GET', '/api/v1/webhooks/deliveries', { key: REQUESTER })
      assert.equal(forbidden.status, 403)
      const bad = await call(s.url, 'GET', '/api/v1/webhooks/deliveries?status=lost', { key: s.adminKey })
      assert.equal(bad.status, 400)
    })
  })
}

describe('webhooks survive a restart (sqlite)', () => {
  test('a delivery still failing when the server stops is delivered by the next one, same event id', async () => {
    const app = await startAppStub()
    const hook = await receiver(1_000_000)
    const dir = mkdtempSync(join(tmpdir(), 'sp-webhooks-restart-'))
    const text = `store: { driver: sqlite, path: ${JSON.stringify(join(dir, 'studiopool.db'))} }
worker: { interval: 1h }
auth:
  keys:
    - { name: portal, role: requester, key: ${REQUESTER} }
webhooks:
  - { name: portal, url: ${JSON.stringify(hook.url)}, secret: ${SECRET}, events: [session.ready], retryBaseMs: 50, retryMaxMs: 100 }
templates:
  demo:
    provider: fake
    fake: { address: ${JSON.stringify(app.url)} }
`
    const boot = () =>
      start({
        config: loadConfig({ text, env: {}, cwd: dir, overrides: { port: 0, dataDir: dir, logLevel: 'silent' } }),
        log: pino({ level: 'silent' }),
        onBootstrapKey: () => {},
      })
    try {
      const first = await boot()
      const grant = await call(first.url, 'POST', '/api/v1/sessions', { key: REQUESTER, body: { userId: 'ada' } })
      assert.ok(grant.status < 300, grant.text)
      await waitFor('two failed attempts', () => hook.hits.length >= 2)
      await first.close()
      const before = hook.hits.length
      const eventId = (JSON.parse(hook.hits[0]!.body) as { id: string }).id
      hook.succeedFromNow()
      const second = await boot()
      try {
        await waitFor('delivered after the restart', () => hook.hits.some((h) => h.answered === 204))
        const ok = hook.hits.find((h) => h.answered === 204)!
        assert.equal((JSON.parse(ok.body) as { id: string }).id, eventId, 'the same event, not a new one')
        assert.ok(hook.hits.length > before)
        const row = (await second.store!.webhooks.list({ limit: 10 })).find((r) => r.eventId === eventId)
        assert.equal(row?.status, 'delivered')
        assert.ok(row.attempts >= 3, `attempts carried over the restart (${row.attempts})`)
      } finally {
        await second.close()
      }
    } finally {
      await hook.close()
      await app.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
