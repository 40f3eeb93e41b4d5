/**
 * Shared templates' refusals in split mode (issue 14; docs/shared-pools.md "Refusals"): a
 * `--role gateway` process in front of a `--role api` process refuses a new visitor of a shared
 * template as the one-process server does — 503 OUTSIDE_SCHEDULE (Retry-After) outside an
 * `unavailable` schedule, decided by the gateway from the same file, and 403 BUDGET_EXCEEDED under a
 * hard budget the API reports exceeded (the cost accrued by a `--role worker` process) (`GET /api/v1/gateway/shared-gate`), HTTP and WebSocket —
 * while a template with neither is served. The three processes are the real binary; the instances are the
 * fake provider's, pointing at an HTTP server of this test.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { stringify as stringifyYaml } from 'yaml'
import { spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { waitFor } from '../helpers/wait.js'
import { CLOSED_SCHEDULE, wsStatus } from '../shared/harness.js'
import { fetchLogin } from '../web/helpers.js'

const PROXY = 'shared-gate-split-proxy-key-0123456789'
const SECRET = 'shared-gate-split-gateway-secret-0123456789abcdef'

describe('split mode: the gateway refuses shared templates’ visitors by schedule and budget', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sp-split-gate-'))
  let app: Server
  let api: ServerProcess
  let worker: ServerProcess
  let gw: ServerProcess
  let cookie: string

  before(async () => {
    app = createServer((_req, res) => res.end('served'))
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
    const address = `http://127.0.0.1:${(app.address() as AddressInfo).port}`
    const shared = { mode: 'shared', provider: 'fake', idleTimeout: 0, healthPath: '/', fake: { address } }
    const config = stringifyYaml({
      server: { host: '127.0.0.1', dataDir: join(dir, 'data') },
      store: { driver: 'sqlite', path: join(dir, 'studiopool.db') },
      auth: { mode: 'keys', bootstrapAdmin: true },
      worker: { interval: '500ms' },
      dashboard: { login: 'dev', admins: ['admin'], allowDevLoginFromSessions: true },
      templates: {
        closed: {
          ...shared,
          schedule: CLOSED_SCHEDULE,
        },
        // 1,000 a second while an instance runs: the hard budget of 1 is spent at once.
        paid: { ...shared, minInstances: 1, price: { onDemandPerHour: 3_600_000 } },
        open: { ...shared, minInstances: 1 },
      },
      budgets: [{ scope: 'template', name: 'paid', label: 'paid app', amount: 1, mode: 'hard' }],
    })
    const env = { PROXY_KEY: PROXY, STUDIOPOOL_SECRET: SECRET }
    api = await spawnServer({ cwd: dir, config, env, args: ['--role', 'api'] })
    // The worker accrues the cost the API's budgets read (one store, as in a split deployment).
    worker = await spawnServer({ cwd: mkdtempSync(join(dir, 'worker-')), config, env, args: ['--role', 'worker'] })
    const gwDir = mkdtempSync(join(dir, 'gw-'))
    gw = await spawnServer({
      cwd: gwDir,
      config,
      env: { ...env, SERVICE_URL: api.url },
      args: ['--role', 'gateway'],
    })
    cookie = await fetchLogin(api.url, 'bob')
  })

  after(async () => {
    await gw?.kill()
    await worker?.kill()
    await api?.kill()
    await new Promise<void>((r) => app.close(() => r()))
    rmSync(dir, { recursive: true, force: true })
  })

  test('control: a shared template with no schedule or budget is served through the gateway', async () => {
    const body = await waitFor('the open template served through the gateway', async () => {
      const r = await fetch(`${gw.url}/a/open/`, { headers: { cookie } })
      return r.status === 200 ? r.text() : undefined
    })
    assert.equal(body, 'served')
  })

  test('outside an unavailable schedule: 503 OUTSIDE_SCHEDULE with Retry-After, HTTP and WebSocket', async () => {
    const r = await fetch(`${gw.url}/a/closed/`, { headers: { cookie } })
    assert.equal(r.status, 503)
    const body = (await r.json()) as { error: { code: string; message: string } }
    assert.equal(body.error.code, 'OUTSIDE_SCHEDULE')
    assert.match(body.error.message, /the next opening is \d{4}-/)
    assert.ok(Number(r.headers.get('retry-after')) > 0)
    assert.equal(await wsStatus(`${gw.url.replace('http', 'ws')}/a/closed/ws`, cookie), 503)
  })

  test('a hard budget the API reports exceeded: 403 BUDGET_EXCEEDED at the gateway, HTTP and WebSocket', async () => {
    const refused = await waitFor('the gateway to refuse the paid template', async () => {
      const r = await fetch(`${gw.url}/a/paid/`, { headers: { cookie } })
      return r.status === 403 ? ((await r.json()) as { error: { code: string; message: string } }) : undefined
    })
    assert.equal(refused.error.code, 'BUDGET_EXCEEDED')
    assert.match(refused.error.message, /budget "paid app" is exceeded for template "paid"/)
    assert.equal(await wsStatus(`${gw.url.replace('http', 'ws')}/a/paid/ws`, cookie), 403)
    // The API says the same to the gateway's proxy key, and to nobody without one.
    const snap = await fetch(`${api.url}/api/v1/gateway/shared-gate`, { headers: { authorization: `Bearer ${PROXY}` } })
    assert.equal(snap.status, 200)
    const { budgets } = (await snap.json()) as { budgets: { scope: string; key: string }[] }
    assert.deepEqual(
      budgets.map((b) => [b.scope, b.key]),
      [['template', 'paid']],
    )
    assert.equal((await fetch(`${api.url}/api/v1/gateway/shared-gate`)).status, 401)
    // Not another template's visitors.
    assert.equal((await fetch(`${gw.url}/a/open/`, { headers: { cookie } })).status, 200)
  })
})
