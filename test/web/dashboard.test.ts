import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { after, before, describe, it } from 'node:test'
import type { Browser, Page } from 'playwright-core'
import { waitFor } from '../helpers/wait.js'
import {
  demoTemplateYaml,
  closeBounded,
  devLogin,
  fetchLogin,
  formToken,
  launchBrowser,
  startServer,
  type TestServer,
} from './helpers.js'

/**
 * The dashboard in a real browser (Debian's chromium) against the real server: dev login, launch
 * with live progress, open through the gateway, stop; the admin view; CSV; keys; CSRF; owner-only.
 */
describe('dashboard with dev login (chromium, local demo instances)', () => {
  let srv: TestServer
  let browser: Browser
  const form = { 'content-type': 'application/x-www-form-urlencoded' }

  before(async () => {
    srv = await startServer(
      [
        'dashboard:',
        '  login: dev',
        '  admins: [ada]',
        'templates:',
        demoTemplateYaml('demo', { displayName: 'Demo session', startupDelayMs: '2500', pricePerHour: '0.5' }),
        demoTemplateYaml('staffonly', { displayName: 'Staff only', allowedGroups: '[staff]' }),
        '',
      ].join('\n'),
    )
    browser = await launchBrowser()
  })
  after(async () => {
    await browser?.close()
    await srv?.close()
  })

  it('sends visitors without a cookie to the login page, and non-admins get 403 on /admin', async () => {
    for (const path of ['/', '/admin', '/admin/history.csv']) {
      const res = await fetch(srv.url + path, { redirect: 'manual' })
      assert.equal(res.status, 303, path)
      assert.equal(res.headers.get('location'), `/login?next=${encodeURIComponent(path)}`)
    }
    const cookie = await fetchLogin(srv.url, 'bob')
    const admin = await fetch(srv.url + '/admin', { headers: { cookie } })
    assert.equal(admin.status, 403)
    assert.match(await admin.text(), /Administrators only/)
    const csv = await fetch(srv.url + '/admin/history.csv', { headers: { cookie } })
    assert.equal(csv.status, 403)
    // Assets are ours, hashed and cacheable.
    const html = await (await fetch(srv.url + '/', { headers: { cookie } })).text()
    const css = /href="(\/assets\/dashboard\.[0-9a-f]+\.css)"/.exec(html)![1]!
    const res = await fetch(srv.url + css)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('cache-control')!, /max-age=31536000/)
    assert.doesNotMatch(html, /https?:\/\/(?!127\.0\.0\.1)[a-z]/i, 'no external URL in the page')
  })

  it('refuses the dev login from a non-loopback address', async () => {
    const app = srv.running.app!
    const page = await app.inject({ method: 'GET', url: '/login', remoteAddress: '192.0.2.7' })
    assert.equal(page.statusCode, 403)
    const post = await app.inject({
      method: 'POST',
      url: '/login',
      remoteAddress: '192.0.2.7',
      headers: form,
      payload: 'user=ada&csrf=x',
    })
    assert.equal(post.statusCode, 403)
    assert.equal(post.headers['set-cookie'], undefined)
    // The same from loopback gets the form.
    assert.equal((await app.inject({ method: 'GET', url: '/login', remoteAddress: '127.0.0.1' })).statusCode, 200)
  })

  let sessionUrl = ''

  it('logs in, launches with a live progress bar that reaches Open, opens the session, and another user gets 403', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1100, height: 900 } })
    try {
      await devLogin(ctx, srv.url, 'alice')
      const page = await ctx.newPage()
      page.on('dialog', (d) => void d.accept())
      await page.goto(srv.url + '/')
      await assertNoExternalRequests(page)
      const card = page.locator('#t-demo')
      assert.equal(
        await page.locator('#t-staffonly').count(),
        0,
        'a template of a group alice is not in is not offered',
      )
      await card.getByRole('button', { name: 'Launch' }).click()
      await page.waitForURL(/\/\?done=launched/)
      // A marker on the window: it survives only if the page is updated in place (server-sent events), not reloaded.
      await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42))
      const bar = card.locator('progress')
      assert.equal(await bar.isVisible(), true, 'the progress bar shows while the instance starts')
      assert.equal(await card.getByRole('link', { name: 'Open' }).isVisible(), false)
      const seen = new Set<number>()
      const open = card.getByRole('link', { name: 'Open' })
      await waitFor(
        'the Open button',
        async () => {
          if (await bar.isVisible().catch(() => false))
            seen.add(await bar.evaluate((b) => (b as HTMLProgressElement).value).catch(() => 100))
          return open.isVisible()
        },
        30_000,
      )
      assert.equal(
        await page.evaluate(() => (window as unknown as { marker?: number }).marker),
        42,
        'updated live, not by a reload',
      )
      assert.ok(
        [...seen].some((v) => v < 100),
        `progress values seen while starting: ${[...seen].join(',')}`,
      )
      assert.match((await card.locator('.js-state').textContent())!, /Ready/)

      const openHref = (await open.getAttribute('href'))!
      assert.match(openHref, /^\/open\/[a-z2-7]{20}$/, 'Open asks the dashboard for a fresh launch link')
      await open.click()
      await page.waitForURL(/\/s\/[a-z2-7]{20}\/$/)
      sessionUrl = page.url()
      assert.ok(!sessionUrl.includes('sp_token'), 'the token is gone from the final URL')
      assert.match(await page.title(), /studiopool demo session/)
      assert.match((await page.locator('h1').textContent())!, /Hello/)

      // Another signed-in user is refused at the gateway.
      const other = await browser.newContext()
      try {
        await devLogin(other, srv.url, 'mallory')
        const p2 = await other.newPage()
        const res = await p2.goto(sessionUrl)
        assert.equal(res!.status(), 403)
        assert.match((await p2.locator('h1').textContent()) ?? '', /Not your session/)
        const viaOpen = await p2.goto(srv.url + openHref)
        assert.equal(viaOpen!.status(), 404, "another user's /open link gives nothing away")
      } finally {
        await closeBounded(other)
      }

      // Back to the dashboard: stop it.
      await page.goto(srv.url + '/')
      await page.locator('#t-demo').getByRole('button', { name: 'Stop' }).click()
      await page.waitForURL(/\/\?done=stopped/)
      await page.locator('#t-demo').getByRole('button', { name: 'Launch' }).waitFor()
      const history = page.locator('#h-history + .table-wrap tbody tr')
      assert.equal(await history.count(), 1)
      assert.match((await history.first().textContent())!, /demo.*user/s)
      const res = await fetch(sessionUrl, { redirect: 'manual' })
      assert.notEqual(res.status, 200, 'the stopped session is gone')
    } finally {
      await closeBounded(ctx)
    }
  })

  it('lets an admin see and delete an instance, export the history as CSV, and create and revoke a key', async () => {
    // alice starts another session (through the form, as the browser would).
    const alice = await fetchLogin(srv.url, 'alice')
    const token = await formToken(srv.url, alice)
    const launched = await fetch(srv.url + '/launch', {
      method: 'POST',
      redirect: 'manual',
      headers: { ...form, cookie: alice, origin: srv.url },
      body: new URLSearchParams({ csrf: token, template: 'demo' }),
    })
    assert.equal(launched.status, 303)
    const live = await waitFor(
      'alice instance',
      async () =>
        (
          await srv.running.store!.listInstances({ ownerId: 'alice', states: ['provisioning', 'starting', 'ready'] })
        )[0],
      20_000,
    )

    const ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 }, acceptDownloads: true })
    try {
      await devLogin(ctx, srv.url, 'ada')
      const page = await ctx.newPage()
      page.on('dialog', (d) => void d.accept())
      await page.goto(srv.url + '/admin')
      assert.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Administration')
      const row = page.locator(`tr[data-admin-instance="${live.id}"]`)
      assert.match((await row.textContent())!, /alice/)
      assert.match((await row.textContent())!, /demo/)
      assert.equal(await page.locator('.chart svg[role=img]').count(), 1, 'the 24-hour chart is drawn')

      await row.getByRole('button', { name: /^Delete/ }).click()
      await page.waitForURL(/\/admin\?done=deleted/)
      await page.getByText('The instance was deleted').waitFor()
      await waitFor(
        'the instance to end',
        async () => {
          const i = await srv.running.store!.getInstance(live.id)
          return !i || i.state === 'terminated'
        },
        20_000,
      )
      await page.goto(srv.url + '/admin')
      assert.equal(await page.locator(`tr[data-admin-instance="${live.id}"]`).count(), 0)

      // History with a filter, and its CSV.
      await page.getByLabel('User').fill('alice')
      await page.getByRole('button', { name: 'Filter' }).click()
      await page.waitForURL(/user=alice/)
      const rows = page.locator('#h-history ~ .table-wrap tbody tr')
      assert.equal(await rows.count(), 2)
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.getByRole('link', { name: 'Download CSV' }).click(),
      ])
      const csv = readFileSync((await download.path())!, 'utf8')
      const lines = csv.trim().split('\r\n')
      assert.equal(lines[0], 'id,instanceId,template,userId,keyName,startedAt,endedAt,durationSeconds,endReason,cost')
      assert.equal(lines.length, 3)
      assert.ok(lines.slice(1).every((l) => l.includes(',alice,dashboard,')))
      assert.ok(lines.some((l) => l.includes(live.id) && l.endsWith(',admin,' + l.split(',').at(-1))))
      // The same bytes as the API's CSV.
      const api = await fetch(`${srv.url}/api/v1/history?format=csv&userId=alice`, {
        headers: { authorization: `Bearer ${srv.adminKey}` },
      })
      assert.equal(await api.text(), csv)

      // Keys: create (the secret is shown once and works), then revoke (it stops working).
      await page.goto(srv.url + '/admin')
      await page.getByLabel('New key name').fill('portal')
      await page.getByLabel('Role').selectOption('requester')
      await page.getByRole('button', { name: 'Create key' }).click()
      const secret = (await page.locator('#new-key').textContent())!.trim()
      assert.match(secret, /^sp_[a-z2-7]{12}_[A-Za-z0-9_-]{43}$/)
      const ok = await fetch(`${srv.url}/api/v1/templates`, { headers: { authorization: `Bearer ${secret}` } })
      assert.equal(ok.status, 200)
      await page.goto(srv.url + '/admin')
      assert.equal(await page.locator('#new-key').count(), 0, 'the secret is not shown again')
      await page.locator('tr[data-key="portal"]').getByRole('button', { name: 'Revoke portal' }).click()
      await page.waitForURL(/done=revoked/)
      assert.match((await page.locator('tr[data-key="portal"]').textContent())!, /revoked/)
      const refused = await fetch(`${srv.url}/api/v1/templates`, { headers: { authorization: `Bearer ${secret}` } })
      assert.equal(refused.status, 401)
    } finally {
      await closeBounded(ctx)
    }
  })

  it('refuses form posts without the right token or from another origin', async () => {
    const bob = await fetchLogin(srv.url, 'bob')
    const token = await formToken(srv.url, bob)
    const post = (body: Record<string, string>, headers: Record<string, string> = {}) =>
      fetch(srv.url + '/launch', {
        method: 'POST',
        redirect: 'manual',
        headers: { ...form, cookie: bob, ...headers },
        body: new URLSearchParams(body),
      })
    assert.equal((await post({ template: 'demo' })).status, 403, 'no token')
    assert.equal((await post({ template: 'demo', csrf: token.slice(0, -2) + 'xx' })).status, 403, 'wrong token')
    const ada = await fetchLogin(srv.url, 'ada')
    assert.equal(
      (await post({ template: 'demo', csrf: await formToken(srv.url, ada) })).status,
      403,
      "another session's token",
    )
    assert.equal(
      (await post({ template: 'demo', csrf: token }, { origin: 'http://evil.example' })).status,
      403,
      'foreign Origin',
    )
    assert.equal(
      (await post({ template: 'demo', csrf: token }, { 'sec-fetch-site': 'cross-site' })).status,
      403,
      'cross-site fetch',
    )
    assert.equal(
      (await post({ template: 'demo', csrf: token }, { 'sec-fetch-site': 'same-site' })).status,
      403,
      'same-site (a session subdomain)',
    )
    assert.equal((await srv.running.store!.listInstances({ ownerId: 'bob' })).length, 0, 'nothing was launched')
    // An admin action without a token is refused too, and a non-admin with a token gets 403.
    const adaToken = await formToken(srv.url, ada, '/admin')
    const keyNoToken = await fetch(srv.url + '/admin/keys', {
      method: 'POST',
      redirect: 'manual',
      headers: { ...form, cookie: ada },
      body: new URLSearchParams({ name: 'x1', role: 'admin' }),
    })
    assert.equal(keyNoToken.status, 403)
    const bobKey = await fetch(srv.url + '/admin/keys', {
      method: 'POST',
      redirect: 'manual',
      headers: { ...form, cookie: bob },
      body: new URLSearchParams({ name: 'x2', role: 'admin', csrf: token }),
    })
    assert.equal(bobKey.status, 403)
    assert.ok(!(await srv.running.store!.listKeys()).some((k) => k.name === 'x1' || k.name === 'x2'))
    // A forged launch of a template bob's groups do not allow: 403 even with a good token.
    assert.equal((await post({ template: 'staffonly', csrf: token })).status, 403)
    // With the token and our origin it works (the control).
    const good = await post({ template: 'demo', csrf: token }, { origin: srv.url, 'sec-fetch-site': 'same-origin' })
    assert.equal(good.status, 303)
    const mine = await waitFor(
      'bob instance',
      async () =>
        (await srv.running.store!.listInstances({ ownerId: 'bob', states: ['provisioning', 'starting', 'ready'] }))[0],
      20_000,
    )
    // A non-admin's admin action is refused by the guard before anything happens, token or not.
    const bobDelete = await fetch(`${srv.url}/admin/instances/${mine.id}/delete`, {
      method: 'POST',
      redirect: 'manual',
      headers: { ...form, cookie: bob },
      body: new URLSearchParams({ csrf: token }),
    })
    assert.equal(bobDelete.status, 403)
    assert.match(await bobDelete.text(), /Administrators only/)
    const after = await srv.running.store!.getInstance(mine.id)
    assert.ok(after && ['provisioning', 'starting', 'ready'].includes(after.state), 'the instance lives on')
    assert.equal(after.ownerId, 'bob')
    // bob cannot stop someone else's session; ada (admin key aside) cannot stop it through the user route either.
    const adaStop = await fetch(`${srv.url}/sessions/${mine.id}/stop`, {
      method: 'POST',
      redirect: 'manual',
      headers: { ...form, cookie: ada },
      body: new URLSearchParams({ csrf: adaToken }),
    })
    assert.equal(adaStop.status, 403)
    const stop = await fetch(`${srv.url}/sessions/${mine.id}/stop`, {
      method: 'POST',
      redirect: 'manual',
      headers: { ...form, cookie: bob },
      body: new URLSearchParams({ csrf: token }),
    })
    assert.equal(stop.status, 303)
  })

  it('fits a 360 px wide screen and can be used with the keyboard', async () => {
    const ctx = await browser.newContext({ viewport: { width: 360, height: 740 } })
    try {
      await devLogin(ctx, srv.url, 'ada')
      const page = await ctx.newPage()
      for (const path of ['/', '/admin']) {
        await page.goto(srv.url + path)
        const width = await page.evaluate(() => document.documentElement.scrollWidth)
        assert.ok(width <= 360, `${path} is ${width}px wide`)
      }
      // The first Tab stop is the skip link, and focus is drawn.
      await page.goto(srv.url + '/')
      await page.keyboard.press('Tab')
      assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content')
      assert.notEqual(await page.evaluate(() => getComputedStyle(document.activeElement!).outlineStyle), 'none')
      // Every form control has an accessible name.
      for (const path of ['/', '/admin']) {
        await page.goto(srv.url + path)
        const unnamed = await page.evaluate(
          () =>
            Array.from(document.querySelectorAll('input:not([type=hidden]),select,button')).filter(
              (e) => !(e as HTMLInputElement).labels?.length && !e.getAttribute('aria-label') && !e.textContent?.trim(),
            ).length,
        )
        assert.equal(unnamed, 0, path)
      }
    } finally {
      await closeBounded(ctx)
    }
  })

  it('redirects after login only to our own pages', async () => {
    const app = srv.running.app!
    const login = await app.inject({ method: 'GET', url: '/login', remoteAddress: '127.0.0.1' })
    const csrf = /name="csrf" value="([^"]+)"/.exec(login.body)![1]!
    const state = String(login.headers['set-cookie']).split(';')[0]!
    for (const [next, want] of [
      ['/admin?x=1', '/admin?x=1'],
      ['https://evil.example/', '/'],
      ['//evil.example/x', '/'],
      ['/\\evil.example', '/'],
      ['javascript:alert(1)', '/'],
      [`${srv.url}/s/abcdefghijklmnopqrst/`, '/s/abcdefghijklmnopqrst/'],
    ] as const) {
      const res = await app.inject({
        method: 'POST',
        url: '/login',
        remoteAddress: '127.0.0.1',
        headers: { ...form, cookie: state },
        payload: new URLSearchParams({ csrf, user: 'carol', next }).toString(),
      })
      assert.equal(res.statusCode, 303, next)
      assert.equal(res.headers.location, want, next)
    }
  })
})

/** Fails the test if the page asked for anything outside our server. */
async function assertNoExternalRequests(page: Page): Promise<void> {
  const base = new URL(page.url()).origin
  page.on('request', (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith('data:')) throw new Error(`external request: ${r.url()}`)
  })
  const ext = await page.evaluate(
    (b) =>
      Array.from(document.querySelectorAll('link[href],script[src],img[src]'))
        .map((e) => (e as HTMLLinkElement).href || (e as HTMLScriptElement).src)
        .filter((u) => !u.startsWith(b)),
    base,
  )
  assert.deepEqual(ext, [])
}
