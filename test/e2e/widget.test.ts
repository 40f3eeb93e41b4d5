/**
 * The warning banner end to end (issue 13, docs/widget.md): the real server with the shipped
 * examples/studiopool.yaml (demo and Jupyter opted in with `injectWidget: true`, plus a strict-CSP
 * app), real processes, headless Debian Chromium. With a short idle timeout and a warning lead
 * time, the banner shows before the cull; "Keep working" keeps the session past its old deadline;
 * the banner's own polling does not (the session is culled with the page open, and the banner
 * says so); Stop ends it; a page with a strict CSP (self-only, and nonce + strict-dynamic +
 * Trusted Types) runs its own script and the banner, with no CSP violation.
 *
 * STUDIOPOOL_SCREENSHOT_DIR=docs/img writes the banner's screenshot (docs/img/widget-banner.png).
 */
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import { waitFor } from '../helpers/wait.js'
import {
  CHROMIUM,
  CHROMIUM_ARGS,
  e2eSkipReason,
  REPO,
  requestReady,
  startE2eServer,
  type E2eServer,
  type HistoryRow,
  type InstanceView,
} from './harness.js'

const IDLE_MS = 16_000
const WARN_MS = 12_000
const skip = e2eSkipReason()
const CSP_APP = join(REPO, 'test/e2e/fixtures/csp-app.mjs')

interface Status {
  pendingStop: { reason: string; at: number } | null
  now: number
  warn: boolean
}

describe('the warning banner in Chromium (injectWidget)', { skip }, () => {
  let s: E2eServer
  let browser: Browser

  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true })
    s = await startE2eServer({
      idleTimeout: `${IDLE_MS}ms`,
      patch(doc) {
        doc.widget = { warnBefore: `${WARN_MS}ms`, poll: '1s' }
        const t = doc.templates as Record<string, Record<string, unknown>>
        t.demo!.injectWidget = true
        t.jupyter!.injectWidget = true
        t.csp = {
          provider: 'local',
          minFree: 0,
          maxInstances: 2,
          idleTimeout: `${IDLE_MS}ms`,
          startTimeout: '30s',
          healthPath: '/healthz',
          injectWidget: true,
          local: { command: ['node', CSP_APP, '--port', '{{port}}', '--host', '{{host}}'] },
        }
      },
    })
  })

  after(async () => {
    await browser?.close()
    await s?.close()
  })

  const banner = (page: Page) => page.locator('div[data-studiopool-widget]')
  const status = (page: Page) =>
    page.evaluate(() => fetch('.studiopool/status', { cache: 'no-store' }).then((r) => r.json())) as Promise<Status>
  const state = async (id: string, user: string) =>
    (await s.command<{ instance: InstanceView }>('GET_STATUS', { instanceId: id, userId: user })).body.instance
  const history = async (id: string) =>
    (await s.api<{ history: HistoryRow[] }>(`/api/v1/history?instanceId=${id}`)).history.find(
      (h) => h.instanceId === id,
    )

  /** Opens the session's launch URL in a fresh context; collects CSP violations and console errors. */
  async function open(url: string): Promise<{ ctx: BrowserContext; page: Page; problems: string[] }> {
    const ctx = await browser.newContext({ viewport: { width: 900, height: 560 } })
    const page = await ctx.newPage()
    const problems: string[] = []
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy|Trusted Type/i.test(m.text())) problems.push(m.text())
    })
    await page.addInitScript(() =>
      document.addEventListener('securitypolicyviolation', (e) =>
        console.error(`Content Security Policy violation: ${e.violatedDirective} ${e.blockedURI}`),
      ),
    )
    await page.goto(url)
    return { ctx, page, problems }
  }

  /** The banner shows (the stop is within the lead time) while the instance is still ready. */
  async function bannerBeforeCull(page: Page, id: string, user: string): Promise<Status> {
    await banner(page)
      .getByText(/This session stops in/)
      .waitFor({ timeout: IDLE_MS + 10_000 })
    const st = await status(page)
    assert.equal(st.pendingStop?.reason, 'idle')
    assert.ok(st.warn)
    assert.ok(st.pendingStop!.at - st.now <= WARN_MS)
    assert.equal((await state(id, user)).state, 'ready', 'warned before the cull')
    await banner(page)
      .getByText(/Because it has been idle/)
      .waitFor()
    return st
  }

  /** "Keep working": the banner goes, and the session is still there well past the deadline it had. */
  async function keepWorkingSurvives(page: Page, id: string, user: string, warned: Status): Promise<void> {
    await banner(page).getByRole('button', { name: 'Keep working' }).click()
    await banner(page).waitFor({ state: 'hidden', timeout: 10_000 })
    const old = warned.pendingStop!.at
    // One worker pass (500 ms) and one flush (500 ms) past the old deadline, with slack for a busy machine.
    await waitFor('the old deadline to pass', () => (Date.now() > old + 3000 ? true : undefined), WARN_MS + 10_000)
    const inst = await state(id, user)
    assert.equal(inst.state, 'ready', 'keep working prevented the cull')
    assert.ok(Date.parse(inst.lastActivityAt ?? '') > old - IDLE_MS, 'the click was recorded as activity')
    assert.equal((await history(id))?.endedAt ?? null, null)
  }

  test('demo: shown before the cull; keep working prevents it; the banner polling alone does not', async (t) => {
    const { instanceId, url } = await requestReady(s, 'wanda', 'demo')
    const { ctx, page, problems } = await open(url)
    try {
      const warned = await bannerBeforeCull(page, instanceId, 'wanda')
      const dir = process.env.STUDIOPOOL_SCREENSHOT_DIR
      const shotDir = dir ? resolve(dir) : join(tmpdir(), 'studiopool-widget-shots')
      mkdirSync(shotDir, { recursive: true })
      await page.screenshot({ path: join(shotDir, 'widget-banner.png') })
      t.diagnostic(`screenshot: ${join(shotDir, 'widget-banner.png')}`)
      await keepWorkingSurvives(page, instanceId, 'wanda', warned)

      // Nobody clicks now: the page stays open and polls, and the session is culled all the same.
      await bannerBeforeCull(page, instanceId, 'wanda')
      const row = await waitFor(
        'the idle cull',
        async () => ((await history(instanceId))?.endedAt ? await history(instanceId) : undefined),
        IDLE_MS + 20_000,
        200,
      )
      assert.equal(row?.endReason, 'idle')
      await banner(page)
        .getByText(/This session has ended/)
        .waitFor({ timeout: 10_000 })
      assert.deepEqual(problems, [])
    } finally {
      await ctx.close()
    }
  })

  test('demo: Stop in the banner (asked twice) ends the session as the user', async () => {
    const { instanceId, url } = await requestReady(s, 'walt', 'demo')
    const { ctx, page } = await open(url)
    try {
      await bannerBeforeCull(page, instanceId, 'walt')
      const stop = banner(page).getByRole('button', { name: /Stop/ })
      await stop.click()
      await banner(page)
        .getByRole('button', { name: /Click again/ })
        .click()
      await banner(page)
        .getByText(/This session was stopped/)
        .waitFor({ timeout: 10_000 })
      const row = await waitFor(
        'the stop',
        async () => ((await history(instanceId))?.endedAt ? await history(instanceId) : undefined),
        15_000,
        200,
      )
      assert.equal(row?.endReason, 'user')
    } finally {
      await ctx.close()
    }
  })

  test('Jupyter: the banner on the notebook tree, before the cull; keep working prevents it', async () => {
    const { instanceId, url } = await requestReady(s, 'judy', 'jupyter')
    const { ctx, page, problems } = await open(url)
    try {
      assert.equal(new URL(page.url()).pathname, `/s/${instanceId}/tree`)
      const warned = await bannerBeforeCull(page, instanceId, 'judy')
      await keepWorkingSurvives(page, instanceId, 'judy', warned)
      assert.ok(await page.locator('#notebook_list').isVisible(), "Jupyter's own page still works")
      assert.deepEqual(problems, [])
    } finally {
      await ctx.close()
    }
  })

  for (const path of ['', 'nonce']) {
    test(`a strict CSP page (${path || 'self only'}): its own script runs, the banner shows, no CSP violation`, async () => {
      const { instanceId, url } = await requestReady(s, `csp-${path || 'self'}`, 'csp')
      const { ctx, page, problems } = await open(url)
      try {
        if (path) await page.goto(`${s.url}/s/${instanceId}/${path}`)
        await page
          .locator('#ran')
          .getByText(path ? 'nonce script ran' : 'self script ran')
          .waitFor({ timeout: 10_000 })
        await bannerBeforeCull(page, instanceId, `csp-${path || 'self'}`)
        await banner(page).getByRole('button', { name: 'Keep working' }).click()
        await banner(page).waitFor({ state: 'hidden', timeout: 10_000 })
        assert.deepEqual(problems, [], 'no CSP or Trusted Types violation')
      } finally {
        await ctx.close()
      }
    })
  }
})
