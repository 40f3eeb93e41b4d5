/**
 * Issue 8 as users see it, in Debian's chromium with JavaScript off, against the real server and real
 * demo-app processes: a launch link opened in a browser signed in as someone else asks before
 * switching, and the app learns its owner from the gateway, whatever the browser claims.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Browser } from 'playwright-core'
import { waitFor } from '../helpers/wait.js'
import { closeBounded, devLogin, demoTemplateYaml, launchBrowser, startServer, type TestServer } from './helpers.js'

const PORTAL = 'portal-key-for-the-switch-test-0123'

describe('launch links in a browser signed in as someone else, and the owner the app sees (chromium, no JavaScript)', () => {
  let srv: TestServer
  let browser: Browser

  before(async () => {
    srv = await startServer(
      [
        'auth:',
        '  keys:',
        `    - { name: portal, role: requester, key: ${PORTAL} }`,
        'templates:',
        demoTemplateYaml('demo'),
        '',
      ].join('\n'),
    )
    browser = await launchBrowser()
  })
  after(async () => {
    await browser?.close()
    await srv?.close()
  })

  async function launchFor(userId: string): Promise<{ url: string; sessionUrl: string }> {
    const res = await fetch(`${srv.url}/api/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${PORTAL}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: 'REQUEST_SESSION', payload: { userId } }),
    })
    assert.equal(res.status, 200)
    const body = (await res.json()) as { url: string; sessionUrl: string; instanceId: string }
    await waitFor(
      'the session to be ready',
      async () => (await srv.running.store!.getInstance(body.instanceId))?.state === 'ready',
      30_000,
    )
    return body
  }

  it("bob, signed in, opens alice's link: he is asked, Stay keeps him bob, Continue makes him alice in her session", async () => {
    const alice = await launchFor('alice')
    const ctx = await browser.newContext({ javaScriptEnabled: false })
    try {
      await devLogin(ctx, srv.url, 'bob')
      const page = await ctx.newPage()
      const res = await page.goto(alice.url)
      assert.equal(res!.status(), 200)
      assert.equal(await page.locator('h1').textContent(), 'Continue as alice?')
      assert.match(
        (await page.locator('main').textContent())!,
        /You are signed in as bob\. This link opens alice’s session\./,
      )
      // Stay: nothing changes; bob is still bob on the dashboard.
      await page.getByRole('link', { name: 'Stay bob' }).click()
      await page.waitForURL(`${srv.url}/`)
      assert.match(await page.content(), /bob/)
      // Back to the link (not used up by the question), and Continue.
      await page.goto(alice.url)
      await page.getByRole('button', { name: 'Continue as alice' }).click()
      await page.waitForURL(alice.sessionUrl)
      assert.equal(await page.locator('#owner').textContent(), 'alice')
      // The link is single use: opening it again just lands in the session (this browser is alice now).
      await page.goto(alice.url)
      assert.equal(page.url(), alice.sessionUrl)
    } finally {
      await closeBounded(ctx)
    }
  })

  it("a spoofed X-Forwarded-User: root from carol's browser reaches her app as carol", async () => {
    const carol = await launchFor('carol')
    const ctx = await browser.newContext({
      javaScriptEnabled: false,
      extraHTTPHeaders: { 'X-Forwarded-User': 'root', 'Remote-User': 'root', 'X-Auth-Request-User': 'root' },
    })
    try {
      const page = await ctx.newPage()
      await page.goto(carol.url)
      await page.waitForURL(carol.sessionUrl)
      assert.equal(await page.locator('#owner').textContent(), 'carol')
      assert.equal(await page.locator('#user').textContent(), 'carol')
      const headers = (await (await page.goto(`${carol.sessionUrl}headers`))!.json()) as {
        headers: Record<string, string>
        owner: { user: string }
      }
      assert.equal(headers.owner.user, 'carol')
      assert.equal(headers.headers['remote-user'], undefined)
      assert.equal(headers.headers['x-auth-request-user'], undefined)
    } finally {
      await closeBounded(ctx)
    }
  })
})
