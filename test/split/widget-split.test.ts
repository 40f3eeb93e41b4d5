/**
 * The warning banner in split mode (docs/widget.md): a gateway of its own (`runGatewayRole`, no
 * store, no pool) in front of the real API (`start()`, SQLite, the fake provider). The banner's
 * status and actions go through the API's gateway feed with the proxy key: the page is injected,
 * `status` shows the pool's pending stop, "keep working" is recorded in the store, Suspend works
 * where the provider can (the fake one), and a refused POST changes nothing.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { request } from 'undici'
import { loadConfig } from '../../src/config/load.js'
import { runGatewayRole } from '../../src/gateway/standalone.js'
import { createTokenService } from '../../src/gateway/tokens.js'
import { start, type Running } from '../../src/main.js'
import { command } from '../api/helpers.js'
import { waitFor } from '../helpers/wait.js'

const PROXY = 'widget-split-proxy-key-0123456789'
const SECRET = 'widget-split-gateway-secret-0123456789abcdef'

describe('the warning banner through a split-mode gateway', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sp-widget-split-'))
  let app: http.Server
  let api: Running
  let gw: Awaited<ReturnType<typeof runGatewayRole>>
  let gwUrl = ''
  let adminKey = ''

  before(async () => {
    app = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end('<!doctype html><html><head><title>app</title></head><body>app</body></html>')
    })
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
    const appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}`
    const text = `
store: { driver: sqlite, path: ${JSON.stringify(join(dir, 'pool.db'))} }
auth: { keys: [{ name: gw, role: proxy, key: ${PROXY} }] }
gateway: { secret: ${SECRET} }
widget: { warnBefore: 1h, poll: 2s }
templates:
  demo: { provider: fake, minFree: 0, idleTimeout: 30m, healthPath: /, injectWidget: true, fake: { address: ${JSON.stringify(appUrl)} } }
`
    const config = loadConfig({ text, env: {}, cwd: dir, overrides: { port: 0, dataDir: dir } })
    api = await start({ config, log: pino({ level: 'silent' }), onBootstrapKey: (k) => (adminKey = k) })
    const gwConfig = loadConfig({
      text: `${text}split: { serviceUrl: ${JSON.stringify(api.url)}, proxyKey: ${PROXY} }\n`,
      env: {},
      cwd: dir,
      overrides: { port: 0, dataDir: dir },
    })
    gw = await runGatewayRole({ config: gwConfig, log: pino({ level: 'silent' }) })
    gwUrl = `http://127.0.0.1:${gw.address.port}`
  })

  after(async () => {
    await gw?.close()
    await api?.close()
    app?.closeAllConnections()
    await new Promise((r) => app?.close(r))
    rmSync(dir, { recursive: true, force: true })
  })

  test('injected, status from the pool, keep working recorded, suspend done, a refused POST changes nothing', async () => {
    const r = await command(api.url, adminKey, 'REQUEST_SESSION', { userId: 'sam', template: 'demo' })
    assert.equal(r.status, 200, r.text)
    const id = r.json.instanceId as string
    await waitFor('ready', async () => (await api.store!.getInstance(id))?.state === 'ready', 20_000)
    const tokens = createTokenService(SECRET, { launchTtlMs: 60_000, cookieTtlMs: 3_600_000 })
    const cookie = `studiopool_session=${tokens.issueSession({ userId: 'sam', admin: false, groups: [] })}`
    const base = `${gwUrl}/s/${id}/`
    const page = await waitFor('the split gateway to route the session', async () => {
      const res = await request(base, { headers: { cookie } })
      const t = await res.body.text()
      return res.statusCode === 200 ? t : undefined
    })
    assert.match(page, new RegExp(`<head><script src="/s/${id}/\\.studiopool/widget\\.js" nonce="[^"]+" async`))

    const st = await request(`${base}.studiopool/status`, { headers: { cookie } })
    const s = (await st.body.json()) as { pendingStop: { reason: string; at: number }; warn: boolean; token: string }
    const inst = (await api.store!.getInstance(id))!
    assert.deepEqual(s.pendingStop, { reason: 'idle', at: Math.max(inst.assignedAt!, inst.readyAt!) + 30 * 60_000 })
    assert.equal(s.warn, true)

    const post = (action: string, headers: Record<string, string>) =>
      request(`${base}.studiopool/${action}`, { method: 'POST', headers: { cookie, ...headers } })
    const refused = await post('keep', { origin: 'https://evil.example', 'x-studiopool-token': s.token })
    assert.equal(refused.statusCode, 403)
    await refused.body.text()
    assert.equal((await api.store!.getInstance(id))!.lastActivityAt, inst.lastActivityAt, 'nothing recorded')

    const kept = await post('keep', { origin: gwUrl, 'x-studiopool-token': s.token })
    assert.equal(kept.statusCode, 200)
    const after = (await kept.body.json()) as { pendingStop: { at: number } }
    const recorded = (await api.store!.getInstance(id))!.lastActivityAt!
    assert.ok(recorded > Math.max(inst.assignedAt!, inst.readyAt!), 'keep working reached the store')
    assert.equal(after.pendingStop.at, recorded + 30 * 60_000)

    const sus = await post('suspend', { origin: gwUrl, 'x-studiopool-token': s.token })
    assert.deepEqual([sus.statusCode, await sus.body.json()], [200, { status: 'OK' }])
    assert.equal((await api.store!.getInstance(id))!.state, 'suspended')
    // Suspending again is a conflict, passed through from the API with its code.
    const again = await post('suspend', { origin: gwUrl, 'x-studiopool-token': s.token })
    assert.equal(again.statusCode, 409)
    assert.equal(((await again.body.json()) as { error: { code: string } }).error.code, 'CONFLICT')
  })
})
