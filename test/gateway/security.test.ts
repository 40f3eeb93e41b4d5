import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Agent, request } from 'undici'
import WebSocket from 'ws'
import { createTokenService, launchUrl, sessionUrl } from '../../src/gateway/tokens.js'
import { gatewayConfig, route, SECRET, startGateway, startUpstream } from './helpers.js'
import type { TestGateway, Upstream } from './helpers.js'

/** Opens a WebSocket and resolves with the handshake's HTTP status (101 when it opened). */
function wsStatus(url: string, headers: Record<string, string>): Promise<{ status: number; ws?: WebSocket }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers })
    const t = setTimeout(() => reject(new Error('ws handshake timed out')), 5000)
    ws.on('open', () => {
      clearTimeout(t)
      resolve({ status: 101, ws })
    })
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(t)
      resolve({ status: res.statusCode ?? 0 })
      res.resume()
      ws.terminate()
    })
    ws.on('error', (err) => {
      clearTimeout(t)
      reject(err)
    })
  })
}

describe('gateway access control', () => {
  let app: Upstream
  let g: TestGateway
  const client = new Agent()
  const a = route({ address: '', ownerId: 'alice' })
  const b = route({ address: '', ownerId: 'bob' })
  const free = route({ address: '', ownerId: null })

  before(async () => {
    app = await startUpstream()
    g = await startGateway()
    for (const r of [a, b, free]) g.hub.upsert({ ...r, address: app.url })
  })
  after(async () => {
    await client.close()
    await g.close()
    await app.close()
  })

  const get = (path: string, headers: Record<string, string> = {}) =>
    request(`${g.base}${path}`, { dispatcher: client, headers })

  test("user A's cookie cannot reach B's instance (HTTP) but reaches A's", async () => {
    const ra = await get(`/s/${a.instanceId}/echo`, { cookie: g.cookie('alice') })
    assert.equal(ra.statusCode, 200)
    await ra.body.dump()
    const rb = await get(`/s/${b.instanceId}/echo`, { cookie: g.cookie('alice'), accept: 'text/html' })
    assert.equal(rb.statusCode, 403)
    assert.match(await rb.body.text(), /belongs to another user/)
    const rf = await get(`/s/${free.instanceId}/echo`, { cookie: g.cookie('alice') })
    assert.equal(rf.statusCode, 403, 'a free warm instance belongs to nobody')
    await rf.body.dump()
  })

  test("user A's cookie cannot reach B's instance (WebSocket); same-origin upgrade works", async () => {
    const origin = g.base
    const ok = await wsStatus(`ws://127.0.0.1:${g.port}/s/${a.instanceId}/ws`, { cookie: g.cookie('alice'), origin })
    assert.equal(ok.status, 101)
    ok.ws!.terminate()
    const no = await wsStatus(`ws://127.0.0.1:${g.port}/s/${b.instanceId}/ws`, { cookie: g.cookie('alice'), origin })
    assert.equal(no.status, 403)
    const anon = await wsStatus(`ws://127.0.0.1:${g.port}/s/${b.instanceId}/ws`, { origin })
    assert.equal(anon.status, 401)
  })

  test('admins reach any instance when adminAccess is on', async () => {
    const r = await get(`/s/${b.instanceId}/echo`, { cookie: g.cookie('root', true) })
    assert.equal(r.statusCode, 200)
    await r.body.dump()
  })

  test('admins are refused when adminAccess is off', async () => {
    const g2 = await startGateway({ adminAccess: false })
    try {
      g2.hub.upsert({ ...b, address: app.url })
      const r = await request(`${g2.base}/s/${b.instanceId}/echo`, { headers: { cookie: g2.cookie('root', true) } })
      assert.equal(r.statusCode, 403)
      await r.body.dump()
    } finally {
      await g2.close()
    }
  })

  test('no cookie: login page for browsers (with next=), 401 JSON for others', async () => {
    const html = await get(`/s/${a.instanceId}/some/path?x=1`, { accept: 'text/html,application/xhtml+xml' })
    assert.equal(html.statusCode, 401)
    const text = await html.body.text()
    assert.match(
      text,
      new RegExp(
        `href="http://127.0.0.1:${g.port}/login\\?next=${encodeURIComponent(`/s/${a.instanceId}/some/path?x=1`).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`,
      ),
    )
    const json = await get(`/s/${a.instanceId}/`)
    assert.equal(json.statusCode, 401)
    assert.equal(((await json.body.json()) as { error: { code: string } }).error.code, 'UNAUTHORIZED')
  })

  test('a tampered, expired, foreign-secret or launch-token-as-cookie value is refused', async () => {
    const good = g.tokens.issueSession({ userId: 'alice', admin: false, groups: [] })
    const parts = good.split('.')
    const payload = JSON.parse(Buffer.from(parts[2]!, 'base64url').toString()) as Record<string, unknown>
    const forged = [
      parts[0],
      parts[1],
      Buffer.from(JSON.stringify({ ...payload, u: 'bob' })).toString('base64url'),
      parts[3],
    ].join('.')
    const flipped = good.slice(0, -2) + (good.endsWith('A') ? 'BB' : 'AA')
    const expired = createTokenService(SECRET, {
      launchTtlMs: 1000,
      cookieTtlMs: 1000,
      now: () => Date.now() - 10_000,
    }).issueSession({ userId: 'alice', admin: false, groups: [] })
    const foreign = createTokenService('another-secret-0123456789', {
      launchTtlMs: 1000,
      cookieTtlMs: 60_000,
    }).issueSession({ userId: 'alice', admin: false, groups: [] })
    const launchAsCookie = g.tokens.issueLaunch({ instanceId: a.instanceId, userId: 'alice' })
    for (const [name, v] of Object.entries({ forged, flipped, expired, foreign, launchAsCookie })) {
      const r = await get(`/s/${a.instanceId}/echo`, { cookie: `sp_session=${v}` })
      assert.equal(r.statusCode, 401, name)
      await r.body.dump()
    }
    const wr = await wsStatus(`ws://127.0.0.1:${g.port}/s/${a.instanceId}/ws`, { cookie: `sp_session=${forged}` })
    assert.equal(wr.status, 401)
  })

  test('launch link: trade for a cookie, redirect to the clean URL, single use, expiry, wrong instance', async () => {
    const token = g.tokens.issueLaunch({ instanceId: a.instanceId, userId: 'alice' })
    const link = launchUrl(gatewayConfig(), g.base, a.instanceId, token)
    assert.equal(link, `${g.base}/s/${a.instanceId}/?sp_token=${token}`)
    const r = await request(link, { dispatcher: client })
    assert.equal(r.statusCode, 302)
    assert.equal(r.headers.location, `/s/${a.instanceId}/`)
    const setCookie = String(r.headers['set-cookie'])
    assert.match(setCookie, /^sp_session=v1\.[^;]+; Path=\/; Max-Age=43200; HttpOnly; SameSite=Lax$/)
    await r.body.dump()
    // The cookie opens the app.
    const cookie = setCookie.split(';')[0]!
    const app1 = await get(`/s/${a.instanceId}/echo`, { cookie })
    assert.equal(app1.statusCode, 200)
    await app1.body.dump()
    // Reuse without a cookie: refused.
    const again = await request(link, { dispatcher: client, headers: { accept: 'text/html' } })
    assert.equal(again.statusCode, 401)
    assert.match(await again.body.text(), /expired or was already used/)
    // Reuse with the owner's cookie (reload, back button): back to the clean URL, no new cookie.
    const reload = await request(link, { dispatcher: client, headers: { cookie } })
    assert.equal(reload.statusCode, 302)
    assert.equal(reload.headers['set-cookie'], undefined)
    await reload.body.dump()
    // Other query parameters survive; the token does not.
    const t2 = g.tokens.issueLaunch({ instanceId: a.instanceId, userId: 'alice' })
    const r2 = await request(`${g.base}/s/${a.instanceId}/lab/tree?x=1&sp_token=${t2}&y=2`, { dispatcher: client })
    assert.equal(r2.headers.location, `/s/${a.instanceId}/lab/tree?x=1&y=2`)
    await r2.body.dump()
    // Expired.
    const old = createTokenService(SECRET, {
      launchTtlMs: 1000,
      cookieTtlMs: 1000,
      now: () => Date.now() - 10_000,
    }).issueLaunch({ instanceId: a.instanceId, userId: 'alice' })
    const r3 = await request(`${g.base}/s/${a.instanceId}/?sp_token=${old}`, { dispatcher: client })
    assert.equal(r3.statusCode, 401)
    await r3.body.dump()
    // A token for another instance.
    const t4 = g.tokens.issueLaunch({ instanceId: b.instanceId, userId: 'bob' })
    const r4 = await request(`${g.base}/s/${a.instanceId}/?sp_token=${t4}`, { dispatcher: client })
    assert.equal(r4.statusCode, 401)
    await r4.body.dump()
    // No token in the logs, ever.
    const logs = g.logs()
    for (const t of [token, t2, old, t4]) {
      assert.ok(!logs.includes(t), 'token found in logs')
      assert.ok(!logs.includes(t.split('.')[3]!), 'token signature found in logs')
    }
  })

  test('launch cookie is Secure when the public URL is https', async () => {
    const g2 = await startGateway({}, (port) => `https://127.0.0.1:${port}`)
    try {
      g2.hub.upsert({ ...a, address: app.url })
      const t = g2.tokens.issueLaunch({ instanceId: a.instanceId, userId: 'alice' })
      const r = await request(`${g2.base}/s/${a.instanceId}/?sp_token=${t}`)
      assert.match(String(r.headers['set-cookie']), /; Secure$/)
      await r.body.dump()
    } finally {
      await g2.close()
    }
  })

  test('cross-origin WebSocket upgrade is refused; configured origins are allowed', async () => {
    const evil = await wsStatus(`ws://127.0.0.1:${g.port}/s/${a.instanceId}/ws`, {
      cookie: g.cookie('alice'),
      origin: 'https://evil.example',
    })
    assert.equal(evil.status, 403)
    assert.match(g.logs(), /cross-origin WebSocket refused/)
    const g2 = await startGateway({ allowedOrigins: ['https://portal.example'] })
    try {
      g2.hub.upsert({ ...a, address: app.url })
      const ok = await wsStatus(`ws://127.0.0.1:${g2.port}/s/${a.instanceId}/ws`, {
        cookie: g2.cookie('alice'),
        origin: 'https://portal.example',
      })
      assert.equal(ok.status, 101)
      ok.ws!.terminate()
    } finally {
      await g2.close()
    }
  })

  test('ids of the wrong format are 404 without a table lookup', async () => {
    for (const p of [
      '/s/',
      '/s/short/',
      '/s/AAAAAAAAAAAAAAAAAAAA/',
      `/s/${a.instanceId}x/`,
      '/s/../../etc/passwd',
      `/s/${a.instanceId.slice(0, 19)}1/`,
    ]) {
      const r = await get(p, { cookie: g.cookie('alice') })
      assert.equal(r.statusCode, 404, p)
      await r.body.dump()
    }
    const w = await wsStatus(`ws://127.0.0.1:${g.port}/s/nope/ws`, { cookie: g.cookie('alice') })
    assert.equal(w.status, 404)
  })
})

describe('subdomain mode', () => {
  let app: Upstream
  let g: TestGateway
  const a = route({ address: '', ownerId: 'alice', pathMode: 'strip' })

  before(async () => {
    app = await startUpstream()
    g = await startGateway(
      { mode: 'subdomain', sessionDomain: 'sessions.test' },
      (port) => `http://sessions.test:${port}`,
    )
    g.hub.upsert({ ...a, address: app.url })
  })
  after(async () => {
    await g.close()
    await app.close()
  })

  test('routes by host, passes the path unchanged, launch works per subdomain', async () => {
    const host = `${a.instanceId}.sessions.test:${g.port}`
    assert.equal(
      sessionUrl(
        gatewayConfig({ mode: 'subdomain', sessionDomain: 'sessions.test' }),
        `http://sessions.test:${g.port}`,
        a.instanceId,
      ),
      `http://${host}/`,
    )
    const token = g.tokens.issueLaunch({ instanceId: a.instanceId, userId: 'alice' })
    const l = await request(`${g.base}/?sp_token=${token}`, { headers: { host } })
    assert.equal(l.statusCode, 302)
    assert.equal(l.headers.location, `http://${host}/`)
    const cookie = String(l.headers['set-cookie']).split(';')[0]!
    assert.doesNotMatch(
      String(l.headers['set-cookie']),
      /Domain=/i,
      'host-only cookie: one session subdomain never sees another one',
    )
    await l.body.dump()
    const r = await request(`${g.base}/echo?x=1`, { headers: { host, cookie } })
    assert.equal(r.statusCode, 200)
    const body = (await r.body.json()) as { url: string; headers: Record<string, string> }
    assert.equal(body.url, '/echo?x=1')
    assert.equal(body.headers['x-forwarded-prefix'], undefined)
    // Path-mode links on the main host go to the session's origin.
    const p = await request(`${g.base}/s/${a.instanceId}/x?y=1`, { headers: { host: `sessions.test:${g.port}` } })
    assert.equal(p.statusCode, 302)
    assert.equal(p.headers.location, `http://${host}/x?y=1`)
    await p.body.dump()
    // A bad label is 404; the bare domain is not a session (no fallback here → 404 page too).
    const bad = await request(`${g.base}/`, { headers: { host: `nope.sessions.test:${g.port}`, cookie } })
    assert.equal(bad.statusCode, 404)
    await bad.body.dump()
    // WebSocket: same-origin (the session's subdomain) is allowed, another session's subdomain is not.
    const ok = await wsStatus(`ws://127.0.0.1:${g.port}/ws`, { host, cookie, origin: `http://${host}` })
    assert.equal(ok.status, 101)
    ok.ws!.terminate()
    const other = route({ address: null })
    const cross = await wsStatus(`ws://127.0.0.1:${g.port}/ws`, {
      host,
      cookie,
      origin: `http://${other.instanceId}.sessions.test:${g.port}`,
    })
    assert.equal(cross.status, 403)
  })
})
