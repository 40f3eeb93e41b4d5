import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { Agent, request } from 'undici'
import WebSocket from 'ws'
import { deriveAppToken } from '../../src/domain/app-token.js'
import { canonicalBytes, launchUrl } from '../../src/gateway/tokens.js'
import { gatewayConfig, route, SECRET, startGateway, startUpstream } from './helpers.js'
import type { TestGateway, Upstream } from './helpers.js'

/** Opens a WebSocket; resolves with the handshake status (101 when it opened). */
function wsOpen(
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; ws?: WebSocket; first?: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers })
    const t = setTimeout(() => reject(new Error('ws handshake timed out')), 5000)
    ws.once('message', (data) => {
      clearTimeout(t)
      resolve({ status: 101, ws, first: data.toString() })
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

const SPOOFED = {
  'X-Forwarded-User': 'root',
  'x-forwarded-groups': 'admins',
  'X-Forwarded-Email': 'root@example.org',
  'X-Forwarded-Preferred-Username': 'root',
  'X-Auth-Request-User': 'root',
  'x-auth-request-email': 'root@example.org',
  'REMOTE-USER': 'root',
  'X-Remote-User': 'root',
  'Remote-Groups': 'admins',
  'X-Studiopool-Admin': '1',
  'X-STUDIOPOOL-USER': 'root',
  X_Forwarded_User: 'root',
  remote_user: 'root',
}

describe('identity to apps, one encoding, requester-scoped cookies, and the switch-user question', () => {
  let app: Upstream
  let g: TestGateway
  const client = new Agent()
  const a = route({
    address: '',
    ownerId: 'alice',
    requester: 'portal-a',
    upstreamHeaders: { Authorization: 'token {{appToken}}', 'X-App-Owner': 'owner={{user}} id={{instanceId}}' },
  })
  const a2 = route({ address: '', ownerId: 'alice', template: 'other', requester: 'portal-b' })
  const b = route({ address: '', ownerId: 'bob', requester: 'portal-a' })

  before(async () => {
    app = await startUpstream()
    g = await startGateway()
    for (const r of [a, a2, b]) g.hub.upsert({ ...r, address: app.url })
  })
  after(async () => {
    await client.close()
    await g.close()
    await app.close()
  })

  const get = (path: string, headers: Record<string, string> = {}) =>
    request(`${g.base}${path}`, { dispatcher: client, headers })
  const seenBy = async (path: string, headers: Record<string, string>) => {
    const r = await get(path, headers)
    assert.equal(r.statusCode, 200)
    return ((await r.body.json()) as { headers: Record<string, string> }).headers
  }
  /** The header fields of the upgrade request as the app saw it. */
  async function upgradeHeaders(
    url: string,
    headers: Record<string, string>,
  ): Promise<Record<string, string | string[] | undefined>> {
    const seen = new Promise<Record<string, string | string[] | undefined>>((resolve) =>
      app.wss.once('connection', (_ws, req) => resolve(req.headers)),
    )
    const w = await wsOpen(url, headers)
    assert.equal(w.status, 101)
    const h = await seen
    w.ws!.terminate()
    return h
  }
  const dashboardCookie = (userId: string, groups: string[] = []) =>
    `sp_session=${g.tokens.issueSession({ userId, admin: false, groups })}`

  test("a spoofed X-Forwarded-User (and every other identity header) from alice's browser reaches the app as alice, over HTTP and WebSocket", async () => {
    const h = await seenBy(`/s/${a2.instanceId}/echo`, {
      cookie: dashboardCookie('alice', ['students', 'r-users']),
      ...SPOOFED,
    })
    assert.equal(h['x-forwarded-user'], 'alice')
    assert.equal(h['x-forwarded-groups'], 'students,r-users', 'the groups the login knows')
    for (const name of Object.keys(SPOOFED).map((n) => n.toLowerCase())) {
      if (name === 'x-forwarded-user' || name === 'x-forwarded-groups') continue
      assert.equal(h[name], undefined, `${name} is dropped`)
    }
    const noGroups = await seenBy(`/s/${a2.instanceId}/echo`, {
      cookie: dashboardCookie('alice'),
      'x-forwarded-groups': 'admins',
    })
    assert.equal(noGroups['x-forwarded-groups'], undefined, 'no groups when the login knows none')

    const w = await wsOpen(`ws://127.0.0.1:${g.port}/s/${a2.instanceId}/ws`, {
      cookie: dashboardCookie('alice'),
      ...SPOOFED,
    })
    assert.equal(w.status, 101)
    w.ws!.terminate()
    // The upstream's WebSocket handshake request, as the app saw it.
    const upgrade = await upgradeHeaders(`ws://127.0.0.1:${g.port}/s/${a2.instanceId}/ws`, {
      cookie: dashboardCookie('alice'),
      ...SPOOFED,
    })
    assert.equal(upgrade['x-forwarded-user'], 'alice')
    for (const name of [
      'remote-user',
      'x-remote-user',
      'x-auth-request-user',
      'x-studiopool-admin',
      'x-studiopool-user',
      'x-forwarded-email',
      'x_forwarded_user',
      'remote_user',
    ])
      assert.equal(upgrade[name], undefined, name)
  })

  test("the template's upstreamHeaders reach the app on HTTP and WebSocket, with the app token; the client's own are replaced, and the token is never logged", async () => {
    const token = deriveAppToken(SECRET, a.instanceId, a.generation)
    const cookie = dashboardCookie('alice')
    const h = await seenBy(`/s/${a.instanceId}/echo`, { cookie, authorization: 'token forged-by-the-client' })
    assert.equal(h.authorization, `token ${token}`)
    assert.equal(h['x-app-owner'], `owner=alice id=${a.instanceId}`)
    assert.equal(
      g.tokens.appToken(a.instanceId, a.generation),
      token,
      'TokenService.appToken is deriveAppToken with the gateway secret',
    )
    const cgi = await seenBy(`/s/${a.instanceId}/echo`, { cookie, x_app_owner: 'owner=root' })
    assert.equal(cgi['x_app_owner'], undefined, 'the underscore spelling of a template header is dropped too')
    const upgrade = await upgradeHeaders(`ws://127.0.0.1:${g.port}/s/${a.instanceId}/ws`, {
      cookie,
      authorization: 'Bearer nope',
    })
    assert.equal(upgrade.authorization, `token ${token}`)
    // A new generation (a replaced instance) gets a new token.
    g.hub.upsert({ ...a, address: app.url, generation: a.generation + 1 })
    try {
      const h2 = await seenBy(`/s/${a.instanceId}/echo`, { cookie })
      assert.equal(h2.authorization, `token ${deriveAppToken(SECRET, a.instanceId, a.generation + 1)}`)
      assert.notEqual(h2.authorization, h.authorization)
    } finally {
      g.hub.upsert({ ...a, address: app.url })
    }
    assert.ok(!g.logs().includes(token), 'the app token is not in the logs')
    // The gateway vouches with the token, so requests that change state must come from the session's own pages.
    const postA = (headers: Record<string, string>) =>
      request(`${g.base}/s/${a.instanceId}/echo`, {
        method: 'POST',
        dispatcher: client,
        headers: { cookie, 'content-type': 'text/plain', ...headers },
        body: 'x',
      })
    for (const [name, headers, status] of [
      ['another site', { origin: 'https://evil.example' }, 403],
      ['a sibling on the same site', { origin: g.base, 'sec-fetch-site': 'same-site' }, 403],
      ['an opaque origin', { origin: 'null' }, 403],
      ['its own page', { origin: g.base, 'sec-fetch-site': 'same-origin' }, 200],
      ['a script (no Origin)', {}, 200],
    ] as const) {
      const r = await postA(headers)
      assert.equal(r.statusCode, status, name)
      await r.body.dump()
    }
    const other = await request(`${g.base}/s/${a2.instanceId}/echo`, {
      method: 'POST',
      dispatcher: client,
      headers: { cookie, origin: 'https://evil.example' },
      body: 'x',
    })
    assert.equal(other.statusCode, 200, 'templates without upstreamHeaders leave CSRF to the app, as before')
    await other.body.dump()
    // Templates without upstreamHeaders pass the client's Authorization on, as before.
    const plain = await seenBy(`/s/${a2.instanceId}/echo`, { cookie, authorization: 'Basic dTpw' })
    assert.equal(plain.authorization, 'Basic dTpw')
  })

  test('a cookie MAC or payload with trailing junk, padding or another base64url spelling is refused (HTTP and WebSocket)', async () => {
    const good = g.tokens.issueSession({ userId: 'alice', admin: false, groups: [] })
    const [v, kid, payload, mac] = good.split('.') as [string, string, string, string]
    // The last character of a 32-byte MAC carries 4 unused bits: another character decodes to the same bytes.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const last = alphabet.indexOf(mac.at(-1)!)
    const sameBytes = alphabet[(last & ~0x3) | ((last & 0x3) ^ 0x1)]!
    const reencodedMac = mac.slice(0, -1) + sameBytes
    assert.deepEqual(
      Buffer.from(reencodedMac, 'base64url'),
      Buffer.from(mac, 'base64url'),
      'the test really re-encodes the same bytes',
    )
    // The same claims, written with a space: signed with the real key, so only the JSON's spelling differs.
    const spaced = Buffer.from(
      JSON.stringify(JSON.parse(Buffer.from(payload, 'base64url').toString())).replace(':', ': '),
    ).toString('base64url')
    const sessionKey = createHmac('sha256', SECRET).update('studiopool/session/v1').digest()
    const spacedToken = `${v}.${kid}.${spaced}.${createHmac('sha256', sessionKey).update(`${v}.${kid}.${spaced}`).digest('base64url')}`
    const variants = {
      padded: `${good}=`,
      doublePadded: `${good}==`,
      bangs: `${good}!!`,
      trailingDot: `${good}.`,
      space: `${good}%20`,
      reencodedMac: `${v}.${kid}.${payload}.${reencodedMac}`,
      paddedPayload: `${v}.${kid}.${payload}==.${mac}`,
      base64Alphabet: `${v}.${kid}.${payload}.${mac.replaceAll('-', '+').replaceAll('_', '/')}`,
      spacedJson: spacedToken,
    }
    assert.equal((await get(`/s/${a2.instanceId}/echo`, { cookie: `sp_session=${good}` })).statusCode, 200)
    for (const [name, value] of Object.entries(variants)) {
      if (value === good) continue
      const r = await get(`/s/${a2.instanceId}/echo`, { cookie: `sp_session=${value}` })
      assert.equal(r.statusCode, 401, name)
      await r.body.dump()
    }
    const ws = await wsOpen(`ws://127.0.0.1:${g.port}/s/${a2.instanceId}/ws`, { cookie: `sp_session=${good}==` })
    assert.equal(ws.status, 401)
    // Launch tokens too.
    const t = g.tokens.issueLaunch({ instanceId: a2.instanceId, userId: 'alice', requester: 'portal-b' })
    const r = await request(`${g.base}/s/${a2.instanceId}/?sp_token=${encodeURIComponent(t + '==')}`, {
      dispatcher: client,
    })
    assert.equal(r.statusCode, 401)
    await r.body.dump()
    assert.deepEqual(canonicalBytes('AA'), Buffer.from([0]))
    assert.equal(canonicalBytes('AB'), undefined, '"AB" decodes to the same byte as "AA", with unused bits set')
  })

  test("a cookie from requester K's launch link opens only K's sessions; a dashboard login opens all of the user's; a second requester's link widens it", async () => {
    const t = g.tokens.issueLaunch({ instanceId: a.instanceId, userId: 'alice', requester: 'portal-a' })
    const r = await request(launchUrl(gatewayConfig(), g.base, a.instanceId, t), { dispatcher: client })
    assert.equal(r.statusCode, 302)
    await r.body.dump()
    const scoped = String(r.headers['set-cookie']).split(';')[0]!
    assert.equal((await get(`/s/${a.instanceId}/echo`, { cookie: scoped })).statusCode, 200)
    const other = await get(`/s/${a2.instanceId}/echo`, { cookie: scoped, accept: 'text/html' })
    assert.equal(other.statusCode, 403, "portal-a's link does not open the session portal-b made for alice")
    assert.match(await other.body.text(), /another application/)
    const ws = await wsOpen(`ws://127.0.0.1:${g.port}/s/${a2.instanceId}/ws`, { cookie: scoped })
    assert.equal(ws.status, 403)
    // The dashboard's cookie (no requester scope) opens both.
    for (const inst of [a, a2]) {
      const d = await get(`/s/${inst.instanceId}/echo`, { cookie: dashboardCookie('alice') })
      assert.equal(d.statusCode, 200)
      await d.body.dump()
    }
    // portal-b's own link in the same browser: the cookie now opens both, and only those.
    const t2 = g.tokens.issueLaunch({ instanceId: a2.instanceId, userId: 'alice', requester: 'portal-b' })
    const r2 = await request(`${g.base}/s/${a2.instanceId}/?sp_token=${t2}`, {
      dispatcher: client,
      headers: { cookie: scoped },
    })
    assert.equal(r2.statusCode, 302)
    await r2.body.dump()
    const widened = String(r2.headers['set-cookie']).split(';')[0]!
    assert.deepEqual(g.tokens.verifySession(widened.slice('sp_session='.length))?.requesters, ['portal-a', 'portal-b'])
    for (const inst of [a, a2])
      assert.equal((await get(`/s/${inst.instanceId}/echo`, { cookie: widened })).statusCode, 200)
  })

  test("a launch link opened in a browser holding another user's cookie asks first; only the page's own POST switches", async () => {
    const bobCookie = dashboardCookie('bob')
    const t = g.tokens.issueLaunch({ instanceId: a2.instanceId, userId: 'alice', requester: 'portal-b' })
    const link = `/s/${a2.instanceId}/tree?x=1&sp_token=${t}`
    let action = ''
    for (let i = 0; i < 2; i++) {
      const page = await get(link, { cookie: bobCookie, accept: 'text/html' })
      assert.equal(page.statusCode, 200)
      assert.equal(page.headers['set-cookie'], undefined, 'no switch on GET')
      assert.equal(page.headers['x-frame-options'], 'DENY')
      assert.equal(
        page.headers['referrer-policy'],
        'origin',
        'the POST carries a real Origin, and no Referer holds the token',
      )
      assert.match(String(page.headers['content-security-policy']), /frame-ancestors 'none'/)
      const html = await page.body.text()
      assert.match(
        html,
        /You are signed in as <strong>bob<\/strong>\. This link opens <strong>alice<\/strong>’s session\./,
      )
      assert.match(html, /<button class="btn" type="submit">Continue as alice<\/button>/)
      assert.match(html, /Stay bob<\/a>/)
      assert.ok(!/<script/i.test(html), 'works without JavaScript')
      action = /<form method="post" action="([^"]+)"/.exec(html)![1]!.replaceAll('&amp;', '&')
    }
    assert.ok(
      action.startsWith('?') && action.includes(`sp_token=${encodeURIComponent(t)}`) && action.includes('sp_switch='),
    )
    const post = (headers: Record<string, string>, url = `/s/${a2.instanceId}/tree${action}`) =>
      request(`${g.base}${url}`, {
        method: 'POST',
        dispatcher: client,
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: '',
      })
    // Refused: no Origin, another site, a cross-site fetch, a wrong or missing form secret, or another cookie than the page's.
    const refusals: [string, Record<string, string>, string?][] = [
      ['no Origin', { cookie: bobCookie }],
      ['another origin', { cookie: bobCookie, origin: 'https://evil.example' }],
      ['cross-site', { cookie: bobCookie, origin: g.base, 'sec-fetch-site': 'cross-site' }],
      [
        'wrong secret',
        { cookie: bobCookie, origin: g.base },
        `/s/${a2.instanceId}/tree?sp_token=${encodeURIComponent(t)}&sp_switch=${'A'.repeat(43)}`,
      ],
      ['another cookie', { cookie: dashboardCookie('carol'), origin: g.base }],
    ]
    for (const [name, headers, url] of refusals) {
      const r = await post(headers, url)
      assert.equal(r.headers['set-cookie'], undefined, name)
      assert.equal(r.statusCode, 403, name)
      assert.match(await r.body.text(), /confirmation has expired/, name)
    }
    // The page's own POST: switches once, to the clean URL.
    const ok = await post({ cookie: bobCookie, origin: g.base })
    assert.equal(ok.statusCode, 303)
    assert.equal(ok.headers.location, `/s/${a2.instanceId}/tree?x=1`)
    const alice = String(ok.headers['set-cookie']).split(';')[0]!
    assert.equal(g.tokens.verifySession(alice.slice('sp_session='.length))?.userId, 'alice')
    await ok.body.dump()
    assert.equal((await get(`/s/${a2.instanceId}/echo`, { cookie: alice })).statusCode, 200)
    // Single use: the same form again does nothing.
    const again = await post({ cookie: bobCookie, origin: g.base })
    assert.equal(again.headers['set-cookie'], undefined)
    assert.notEqual(again.statusCode, 303)
    await again.body.dump()
    // The same user's own link: no question, as before.
    const t3 = g.tokens.issueLaunch({ instanceId: b.instanceId, userId: 'bob', requester: 'portal-a' })
    const same = await get(`/s/${b.instanceId}/?sp_token=${t3}`, { cookie: bobCookie })
    assert.equal(same.statusCode, 302)
    await same.body.dump()
    // A browser without a cookie: no question either.
    const t4 = g.tokens.issueLaunch({ instanceId: b.instanceId, userId: 'bob', requester: 'portal-a' })
    const fresh = await get(`/s/${b.instanceId}/?sp_token=${t4}`)
    assert.equal(fresh.statusCode, 302)
    assert.match(String(fresh.headers['set-cookie']), /^sp_session=/)
    await fresh.body.dump()
    const logs = g.logs()
    for (const secret of [t, t3, t4, action])
      assert.ok(!logs.includes(secret.slice(-20)), 'no token or form secret in the logs')
  })
})
