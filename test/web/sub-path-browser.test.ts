import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Browser, Page } from 'playwright-core'
import { closeBounded, demoTemplateYaml, launchBrowser, startServer, type TestServer } from './helpers.js'
import { oidcYaml, signInAtIdp, startIdp, type TestIdp } from './oidc-idp.js'

/**
 * Sub-path hosting in a real browser (issue 17): with `server.publicUrl: …/studiopool/` the dashboard
 * (dev login, launch, live progress, the session through the gateway) and the API docs load with
 * no failed request and no request outside the prefix.
 */
describe('dashboard under a sub-path (chromium)', () => {
  let srv: TestServer
  let browser: Browser

  before(async () => {
    srv = await startServer(
      [
        'server:',
        '  publicUrl: "http://127.0.0.1:0/studiopool/"',
        'dashboard:',
        '  login: dev',
        '  admins: [ada]',
        'templates:',
        demoTemplateYaml('demo', { displayName: 'Demo session' }),
        '',
      ].join('\n'),
    )
    browser = await launchBrowser()
  })
  after(async () => {
    await browser?.close()
    await srv?.close()
  })

  /** Every request the page makes, and those that failed (network error or status >= 400). */
  function watch(page: Page): { all: string[]; failed: string[] } {
    const out = { all: [] as string[], failed: [] as string[] }
    page.on('request', (r) => out.all.push(r.url()))
    page.on('requestfailed', (r) => {
      // A live feed closed by a navigation is not a failure.
      if (!/net::ERR_ABORTED/.test(r.failure()?.errorText ?? ''))
        out.failed.push(`${r.url()} ${r.failure()?.errorText}`)
    })
    page.on('response', (r) => {
      if (r.status() >= 400) out.failed.push(`${r.url()} ${r.status()}`)
    })
    return out
  }

  it('signs in, launches and opens the session, all under /studiopool/', async () => {
    const base = srv.url
    assert.match(base, /^http:\/\/127\.0\.0\.1:\d+\/studiopool$/)
    const ctx = await browser.newContext()
    const page = await ctx.newPage()
    const seen = watch(page)
    await page.goto(`${base}/`)
    assert.equal(new URL(page.url()).pathname, '/studiopool/login')
    await page.getByLabel('User name').fill('ada')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.waitForURL(`${base}/`)
    await page.getByRole('link', { name: 'Admin' }).click()
    await page.waitForURL(`${base}/admin`)
    await page.getByRole('link', { name: 'My sessions' }).click()
    await page.waitForURL(`${base}/`)
    await page.getByRole('button', { name: 'Launch' }).first().click()
    const open = page.getByRole('link', { name: 'Open' }).first()
    await open.waitFor({ timeout: 30_000 })
    await open.click()
    await page.waitForURL(/\/studiopool\/s\/[a-z0-9]{20}\//, { timeout: 30_000 })
    await page.getByText('WebSocket echo').waitFor()
    await page.getByText('connected').waitFor({ timeout: 10_000 })
    const docs = await ctx.newPage()
    const seenDocs = watch(docs)
    await docs.goto(`${base}/api/docs`)
    await docs.getByText('studiopool', { exact: false }).first().waitFor()
    const all = [...seen.all, ...seenDocs.all]
    const failed = [...seen.failed, ...seenDocs.failed]
    assert.deepEqual(failed, [], 'no request failed')
    const outside = all.filter((u) => u.startsWith('http') && !new URL(u).pathname.startsWith('/studiopool/'))
    assert.deepEqual(outside, [], 'no request left the prefix')
    await closeBounded(ctx)
  })
})

describe('OIDC login under a sub-path (oidc-provider, chromium)', { timeout: 180_000 }, () => {
  let idp: TestIdp
  let srv: TestServer
  let browser: Browser

  before(async () => {
    idp = await startIdp()
    srv = await startServer(
      [
        'server:',
        '  publicUrl: "http://127.0.0.1:0/studiopool/"',
        'dashboard:',
        ...oidcYaml(idp.issuer),
        '  adminGroups: [ops]',
        'templates:',
        demoTemplateYaml('demo', { displayName: 'Demo session' }),
        '',
      ].join('\n'),
    )
    // The redirect URI the IdP knows is under the prefix: a callback at the root would not match.
    idp.attach(`${srv.url}/login/callback`)
    browser = await launchBrowser()
  })
  after(async () => {
    await browser?.close()
    await srv?.close()
    await idp?.close()
  })

  it('goes to the IdP and back under /studiopool/, with the cookie scoped to the prefix', async () => {
    const base = srv.url
    const ctx = await browser.newContext()
    try {
      const page = await ctx.newPage()
      const sentTo: string[] = []
      page.on('request', (r) => {
        const u = new URL(r.url())
        if (u.origin === idp.issuer && u.searchParams.has('redirect_uri'))
          sentTo.push(u.searchParams.get('redirect_uri')!)
      })
      await page.goto(`${base}/`)
      assert.ok(page.url().startsWith(`${idp.issuer}/`), `at the IdP: ${page.url()}`)
      await signInAtIdp(page, 'carol')
      await page.waitForURL(`${base}/`)
      assert.match((await page.locator('.who .user').textContent())!, /carol/)
      const cookie = (await ctx.cookies()).find((c) => c.name === 'studiopool_session')
      assert.equal(cookie?.path, '/studiopool/', 'the session cookie is scoped to the prefix')
      await page.getByRole('link', { name: 'Admin' }).click()
      await page.waitForURL(`${base}/admin`)
      // The authorization request named the callback under the prefix (as the IdP's client has it).
      assert.deepEqual(sentTo, [`${base}/login/callback`])
    } finally {
      await closeBounded(ctx)
    }
  })
})
