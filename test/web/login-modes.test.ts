import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Browser, BrowserContext } from 'playwright-core'
import { closeBounded, demoTemplateYaml, launchBrowser, startServer, type TestServer } from './helpers.js'
import { oidcYaml, signInAtIdp, startIdp, type TestIdp } from './oidc-idp.js'

// Bounded well below the runner's 10 minutes: every step here takes seconds.
describe('OIDC login against a real identity provider (oidc-provider, chromium)', { timeout: 180_000 }, () => {
  let idp: TestIdp
  let srv: TestServer
  let browser: Browser

  before(async () => {
    idp = await startIdp()
    srv = await startServer(
      [
        'dashboard:',
        ...oidcYaml(idp.issuer),
        '  adminGroups: [ops]',
        'templates:',
        demoTemplateYaml('demo', { displayName: 'Demo session' }),
        demoTemplateYaml('research', { displayName: 'Research workbench', allowedGroups: '[researchers]' }),
        '',
      ].join('\n'),
    )
    idp.attach(`${srv.url}/login/callback`)
    browser = await launchBrowser()
  })
  after(async () => {
    await browser?.close()
    await srv?.close()
    await idp?.close()
  })

  /** Opens the dashboard, follows the redirects to the IdP, signs in and consents there. */
  async function signIn(user: string): Promise<BrowserContext> {
    const ctx = await browser.newContext()
    const page = await ctx.newPage()
    await page.goto(srv.url + '/')
    assert.ok(page.url().startsWith(`${idp.issuer}/`), `at the IdP: ${page.url()}`)
    await signInAtIdp(page, user)
    await page.waitForURL(`${srv.url}/`)
    await closeBounded(page, 'page')
    return ctx
  }

  it('signs a user in with their groups; a template of another group is neither offered nor launchable', async () => {
    const ctx = await signIn('dave')
    try {
      const page = await ctx.newPage()
      await page.goto(srv.url + '/')
      assert.match((await page.locator('.who .user').textContent())!, /dave/)
      assert.equal(await page.locator('#t-demo').count(), 1)
      assert.equal(await page.locator('#t-research').count(), 0, 'research is for researchers only')
      assert.equal(await page.getByRole('link', { name: 'Admin' }).count(), 0)
      const csrf = await page.locator('input[name=csrf]').first().inputValue()
      const forged = await ctx.request.post(srv.url + '/launch', {
        form: { csrf, template: 'research' },
        headers: { origin: srv.url },
        maxRedirects: 0,
      })
      assert.equal(forged.status(), 403)
      assert.equal((await srv.running.store!.listInstances({ ownerId: 'dave' })).length, 0)
      // The control: the template dave may use launches.
      const ok = await ctx.request.post(srv.url + '/launch', {
        form: { csrf, template: 'demo' },
        headers: { origin: srv.url },
        maxRedirects: 0,
      })
      assert.equal(ok.status(), 303)
      assert.equal((await srv.running.store!.listInstances({ ownerId: 'dave' })).length, 1)
      assert.equal((await ctx.request.get(srv.url + '/admin', { maxRedirects: 0 })).status(), 403)
    } finally {
      await closeBounded(ctx)
    }
  })

  it('makes a member of an admin group an admin, who sees the group-only template', async () => {
    const ctx = await signIn('carol')
    try {
      const page = await ctx.newPage()
      await page.goto(srv.url + '/')
      assert.equal(await page.locator('#t-research').count(), 1)
      await page.getByRole('link', { name: 'Admin' }).click()
      await page.waitForURL(`${srv.url}/admin`)
      assert.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Administration')
    } finally {
      await closeBounded(ctx)
    }
  })

  it('refuses a callback without the login state cookie, or with a forged state', async () => {
    const noState = await fetch(`${srv.url}/login/callback?code=abc&state=xyz`, { redirect: 'manual' })
    assert.equal(noState.status, 400)
    assert.equal(
      noState.headers.getSetCookie().some((c) => c.startsWith('studiopool_session=') && !c.includes('Max-Age=0')),
      false,
    )
    // A real state cookie, but a code and state the IdP never issued for it.
    const begin = await fetch(`${srv.url}/login`, { redirect: 'manual' })
    assert.equal(begin.status, 303)
    const state = begin.headers
      .getSetCookie()
      .find((c) => c.startsWith('studiopool_session_login='))!
      .split(';')[0]!
    const forged = await fetch(`${srv.url}/login/callback?code=abc&state=forged`, {
      redirect: 'manual',
      headers: { cookie: state },
    })
    assert.equal(forged.status, 403)
    assert.equal(
      forged.headers.getSetCookie().some((c) => /^studiopool_session=[^;]/.test(c)),
      false,
    )
    const denied = await fetch(`${srv.url}/login/callback?error=access_denied&error_description=%3Cscript%3E`, {
      redirect: 'manual',
      headers: { cookie: state },
    })
    assert.equal(denied.status, 403)
    assert.doesNotMatch(await denied.text(), /<script>/)
  })
})

describe('trusted header login (login proxy in front)', () => {
  let srv: TestServer
  before(async () => {
    srv = await startServer(
      [
        'dashboard:',
        '  login: header',
        '  adminGroups: [ops]',
        '  header:',
        '    userHeader: X-Auth-User',
        '    groupsHeader: X-Auth-Groups',
        '    trustedProxies: [10.0.0.5, 192.168.10.0/24]',
        'templates:',
        demoTemplateYaml('demo'),
        '',
      ].join('\n'),
    )
  })
  after(async () => {
    await srv?.close()
  })

  it('honours the header only from a trusted proxy address', async () => {
    const app = srv.running.app!
    const h = { 'x-auth-user': 'erin', 'x-auth-groups': 'ops, staff' }
    for (const remoteAddress of ['10.0.0.5', '192.168.10.77']) {
      const res = await app.inject({ method: 'GET', url: '/login?next=%2Fadmin', remoteAddress, headers: h })
      assert.equal(res.statusCode, 303, remoteAddress)
      assert.equal(res.headers.location, '/admin')
      const cookie = String([res.headers['set-cookie']].flat().find((c) => String(c).startsWith('studiopool_session=')))
      assert.match(cookie, /HttpOnly; SameSite=Lax/)
      const claims = srv.running.tokens!.verifySession(cookie.split(';')[0]!.split('=')[1]!)
      assert.deepEqual(
        { ...claims, expiresAt: 0 },
        { userId: 'erin', admin: true, groups: ['ops', 'staff'], expiresAt: 0 },
      )
      // The dashboard itself: served straight away from the trusted proxy.
      const admin = await app.inject({ method: 'GET', url: '/admin', remoteAddress, headers: h })
      assert.equal(admin.statusCode, 200)
    }
    for (const remoteAddress of ['10.0.0.6', '127.0.0.1', '192.168.11.1']) {
      const res = await app.inject({
        method: 'GET',
        url: '/login',
        remoteAddress,
        headers: { ...h, 'x-forwarded-for': '10.0.0.5' },
      })
      assert.equal(res.statusCode, 403, remoteAddress)
      assert.equal(res.headers['set-cookie'], undefined)
      const page = await app.inject({ method: 'GET', url: '/', remoteAddress, headers: h })
      assert.equal(page.statusCode, 303, 'the header is ignored: sign in first')
    }
    // From the proxy but without the header: no identity.
    assert.equal((await app.inject({ method: 'GET', url: '/login', remoteAddress: '10.0.0.5' })).statusCode, 403)
  })

  it('follows the header when the user behind the proxy changes', async () => {
    const app = srv.running.app!
    const first = await app.inject({
      method: 'GET',
      url: '/',
      remoteAddress: '10.0.0.5',
      headers: { 'x-auth-user': 'frank' },
    })
    assert.equal(first.statusCode, 200)
    const cookie = String([first.headers['set-cookie']].flat()[0]).split(';')[0]!
    const again = await app.inject({
      method: 'GET',
      url: '/',
      remoteAddress: '10.0.0.5',
      headers: { 'x-auth-user': 'frank', cookie },
    })
    assert.equal(again.headers['set-cookie'], undefined, 'same user: the cookie is kept')
    const other = await app.inject({
      method: 'GET',
      url: '/',
      remoteAddress: '10.0.0.5',
      headers: { 'x-auth-user': 'gina', cookie },
    })
    assert.match(other.body, /gina/)
    assert.doesNotMatch(other.body, /frank/)
  })
})
