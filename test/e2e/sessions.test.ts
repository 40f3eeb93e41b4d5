/**
 * Real sessions end to end (issue 4): the shipped examples/studiopool.yaml run by the real server,
 * real Jupyter and R processes, headless Debian Chromium. Request → start → gateway → app → idle cull.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'
import { chromium, type Browser, type Page } from 'playwright-core'
import WebSocket from 'ws'
import { waitFor } from '../helpers/wait.js'
import { printedBy } from '../helpers/jupyter.js'
import {
  CHROMIUM,
  CHROMIUM_ARGS,
  CookieJar,
  e2eSkipReason,
  http,
  sessionPids,
  requestReady,
  waitCulled,
  type E2eServer,
  type HistoryRow,
  type InstanceView,
  startE2eServer,
} from './harness.js'

// Long enough that a busy machine rendering the first plot or loading the notebook page's scripts
// does not look idle: server pushes and the body of a response under way do not count. 6 s was not:
// CI runs and a local run beside six busy loops saw R take longer than that for Shiny's first output,
// and the session was culled while the browser waited for it.
const IDLE_MS = 15_000
/** From the moment the client goes quiet: the idle timeout, one activity flush, one worker pass, the app's shutdown. */
const CULL_DEADLINE_MS = IDLE_MS + 20_000

const skip = e2eSkipReason()

/**
 * (d): the assignment ended because of idleness, no sooner than the idle timeout after the last
 * activity the gateway recorded, and that activity came from the client after the app was ready.
 */
function assertIdleCull(culled: { row: HistoryRow; instance: InstanceView }, userId: string, template: string): number {
  const { row, instance } = culled
  assert.equal(row.endReason, 'idle')
  assert.equal(row.userId, userId)
  assert.equal(row.template, template)
  assert.equal(instance.state, 'terminated')
  const readyAt = Date.parse(instance.readyAt ?? '')
  const lastActivityAt = Date.parse(instance.lastActivityAt ?? '')
  const endedAt = Date.parse(row.endedAt ?? '')
  assert.ok(
    lastActivityAt > readyAt,
    `the gateway recorded the client's activity (ready ${instance.readyAt}, last activity ${instance.lastActivityAt})`,
  )
  const idle = endedAt - lastActivityAt
  assert.ok(idle >= IDLE_MS, `culled ${idle} ms after the last activity, before the ${IDLE_MS} ms idle timeout`)
  return idle
}

/** What a page reported that a failure should name: console errors, failed requests, error statuses. */
function watchPage(page: Page): { summary(): string } {
  const notes: string[] = []
  const at = () => new Date().toISOString().slice(11, 23)
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning')
      notes.push(`${at()} console.${m.type()}: ${m.text().slice(0, 300)}`)
  })
  page.on('pageerror', (e) => notes.push(`${at()} pageerror: ${e.message.slice(0, 300)}`))
  page.on('requestfailed', (r) => notes.push(`${at()} failed ${r.url()}: ${r.failure()?.errorText ?? '?'}`))
  page.on('response', (r) => {
    if (r.status() >= 400) notes.push(`${at()} ${r.status()} ${r.url()}`)
  })
  return {
    summary: () =>
      notes.length ? notes.slice(-20).join('\n') : 'no console errors, failed requests or error statuses',
  }
}

describe('real sessions end to end (examples/studiopool.yaml)', { skip }, () => {
  let s: E2eServer
  let browser: Browser | undefined

  before(async () => {
    s = await startE2eServer({ idleTimeout: `${IDLE_MS}ms` })
  })

  after(async () => {
    await browser?.close()
    await s?.close()
  })

  async function getBrowser(): Promise<Browser> {
    browser ??= await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true })
    return browser
  }

  test('a template whose program is missing is reported at start and refused with 503; the others run', async (t) => {
    const unavailable = s.logs
      .map((l) => JSON.parse(l) as { level: number; template?: string; msg: string })
      .filter((l) => l.level >= 50 && l.template !== undefined && l.msg.includes('is unavailable'))
    if (existsSync('/usr/lib/rstudio-server/bin/rserver')) {
      t.diagnostic('RStudio Server is installed here: the local rstudio template is available')
    } else {
      const line = unavailable.find((l) => l.template === 'rstudio')
      assert.ok(line, `no start-up error for the rstudio template in ${JSON.stringify(unavailable)}`)
      assert.match(line.msg, /rserver" does not exist or is not executable/)
      const r = await s.command<{ error: { code: string; message: string } }>('REQUEST_SESSION', {
        userId: 'dave',
        template: 'rstudio',
      })
      assert.equal(r.status, 503)
      assert.equal(r.body.error.code, 'TEMPLATE_UNAVAILABLE')
      assert.match(r.body.error.message, /template "rstudio" is not available: .*rserver/)
    }
    // rstudio-ec2: no AWS credentials on a test machine (and the ids are placeholders). Where there
    // are credentials the template is available, and a request would launch a real instance: not here.
    const ec2Why = s.running.pool!.unavailableReason('rstudio-ec2')
    if (ec2Why === undefined) {
      t.diagnostic('AWS credentials found: rstudio-ec2 is available and is not requested by this test')
    } else {
      assert.ok(
        unavailable.some((l) => l.template === 'rstudio-ec2'),
        'no start-up error for rstudio-ec2',
      )
      const r = await s.command<{ error: { code: string; message: string } }>('REQUEST_SESSION', {
        userId: 'dave',
        template: 'rstudio-ec2',
      })
      assert.equal(r.status, 503)
      assert.equal(r.body.error.code, 'TEMPLATE_UNAVAILABLE')
      assert.match(r.body.error.message, /template "rstudio-ec2" is not available: provider ec2: /)
    }
    // The others were not stopped by it: the demo starts and answers through the gateway.
    const demo = await requestReady(s, 'dave', 'demo', 30_000)
    const page = await http(demo.url, new CookieJar())
    assert.equal(page.status, 200)
    assert.equal(new URL(page.url).pathname, `/s/${demo.instanceId}/`)
    const del = await s.command('DELETE', { instanceId: demo.instanceId })
    assert.equal(del.status, 200)
  })

  test('(a)+(d) Jupyter: launch URL, kernel over the REST API, print(6*7) over the kernel WebSocket → 42; culled when idle', async (t) => {
    const { instanceId, url, readyMs } = await requestReady(s, 'alice', 'jupyter')
    const jar = new CookieJar()
    const base = `${s.url}/s/${instanceId}/`

    // The launch URL trades its token for the gateway cookie and lands on Jupyter (which sends us to /tree).
    const tree = await http(url, jar)
    assert.equal(tree.status, 200, tree.text.slice(0, 300))
    assert.equal(new URL(tree.url).pathname, `/s/${instanceId}/tree`)
    assert.ok(jar.get(s.running.config.gateway.cookieName), 'the launch URL set the gateway cookie')
    const xsrf = jar.get('_xsrf')
    assert.ok(xsrf, 'Jupyter set its _xsrf cookie on the tree page')

    // Jupyter checks its token (JUPYTER_TOKEN={{appToken}}), which only the gateway sends: straight to its port, it refuses us.
    const address = (await s.running.store!.getInstance(instanceId))!.address!
    const direct = await fetch(`${address}/s/${instanceId}/api/kernels`, { redirect: 'manual' })
    assert.equal(direct.status, 403, 'Jupyter refuses a request without its token')
    await direct.arrayBuffer()
    // Token-authenticated requests skip Jupyter's own XSRF check, so the gateway refuses a POST from another site instead.
    const json = { 'content-type': 'application/json' }
    const refused = await http(`${base}api/kernels`, jar, {
      method: 'POST',
      headers: { ...json, origin: 'https://evil.example' },
      body: '{"name":"python3"}',
    })
    assert.equal(refused.status, 403)
    const created = await http(`${base}api/kernels`, jar, {
      method: 'POST',
      headers: { ...json, 'x-xsrftoken': xsrf },
      body: '{"name":"python3"}',
    })
    assert.equal(created.status, 201, created.text.slice(0, 300))
    const kernelId = (JSON.parse(created.text) as { id: string }).id

    const session = randomUUID()
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}api/kernels/${kernelId}/channels?session_id=${session}`, {
      headers: { origin: s.origin, cookie: jar.header() },
    })
    const messages: { msg_type: string; parent_header: { msg_id?: string }; content: Record<string, unknown> }[] = []
    ws.on('message', (data) => messages.push(JSON.parse(data.toString())))
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => reject(new Error(`WebSocket refused: ${res.statusCode}`)))
    })
    const msgId = randomUUID()
    ws.send(
      JSON.stringify({
        header: {
          msg_id: msgId,
          username: 'e2e',
          session,
          msg_type: 'execute_request',
          version: '5.3',
          date: new Date().toISOString(),
        },
        parent_header: {},
        metadata: {},
        content: {
          code: 'print(6*7)',
          silent: false,
          store_history: true,
          user_expressions: {},
          allow_stdin: false,
          stop_on_error: true,
        },
        channel: 'shell',
        buffers: [],
      }),
    )
    const printed = await waitFor('the output of execute_request', () => printedBy(messages, msgId), 30_000)
    assert.deepEqual(printed.names, ['stdout'])
    assert.equal(printed.text, '42\n')
    await waitFor(
      'the execute_reply',
      () => messages.find((m) => m.msg_type === 'execute_reply' && m.parent_header.msg_id === msgId),
      10_000,
    )

    // Jupyter logs every 4xx: none for the readiness probe ({{basePath}}api) or anything we sent.
    assert.doesNotMatch(s.outputLog(instanceId), / 404 GET /)

    // Jupyter and its kernel, both run in the instance's directory.
    const pids = sessionPids(s.instanceDir(instanceId))
    assert.ok(pids.length >= 2, `expected Jupyter and a kernel, found ${pids.length} process(es)`)

    // The client goes quiet.
    ws.close()
    await new Promise((r) => ws.once('close', r))
    const quietAt = Date.now()
    const idle = assertIdleCull(await waitCulled(s, instanceId, 'alice', pids, CULL_DEADLINE_MS), 'alice', 'jupyter')
    t.diagnostic(
      `jupyter ready ${readyMs} ms after the request; culled ${idle} ms after the last activity; processes gone ${Date.now() - quietAt} ms after the client went quiet`,
    )
  })

  test('(b)+(d) Shiny in Chromium: change an input, the reactive output changes; culled when idle', async (t) => {
    // The browser first: a cold Chromium start under load can outlast IDLE_MS, and a session its
    // user reaches only after the idle timeout is (rightly) culled before the page loads.
    const browser = await getBrowser()
    const { instanceId, url, readyMs } = await requestReady(s, 'bob', 'shiny')
    const ctx = await browser.newContext()
    let pids: number[]
    try {
      const page = await ctx.newPage()
      const seen = watchPage(page)
      await page.goto(url)
      assert.equal(new URL(page.url()).pathname, `/s/${instanceId}/`)
      const summary = (re: string) =>
        page
          .waitForFunction((src) => new RegExp(src).test(document.getElementById('summary')?.textContent ?? ''), re, {
            timeout: 20_000,
          })
          .catch(async (err: Error) => {
            const st = await s.command<{ instance: InstanceView }>('GET_STATUS', { instanceId, userId: 'bob' })
            throw new Error(
              `${err.message}\n--- page: ${seen.summary()}\n--- instance: ${JSON.stringify(st.body.instance)}\n--- output.log ---\n${s.outputLog(instanceId)}`,
            )
          })
      await summary('^norm: 100 draws, mean ')
      await page.locator('#hist img').waitFor({ timeout: 20_000 })
      const first = await page.locator('#summary').textContent()

      await page.selectOption('#dist', 'exp')
      await summary('^exp: 100 draws, mean ')
      const second = await page.locator('#summary').textContent()
      assert.notEqual(second, first)

      pids = sessionPids(s.instanceDir(instanceId))
      assert.ok(pids.length >= 1, 'the R process runs in the instance directory')
    } finally {
      await ctx.close()
    }
    const quietAt = Date.now()
    const idle = assertIdleCull(await waitCulled(s, instanceId, 'bob', pids, CULL_DEADLINE_MS), 'bob', 'shiny')
    t.diagnostic(
      `shiny ready ${readyMs} ms after the request; culled ${idle} ms after the last activity; processes gone ${Date.now() - quietAt} ms after the browser closed`,
    )
  })

  test('(c)+(d) Jupyter notebook UI in Chromium: new notebook, run a cell, see its output; culled when idle', async (t) => {
    const browser = await getBrowser() // first, as in (b)
    const { instanceId, url, readyMs } = await requestReady(s, 'carol', 'jupyter')
    const ctx = await browser.newContext()
    let pids: number[]
    try {
      const page = await ctx.newPage()
      const seen = watchPage(page)
      await page.goto(url)
      assert.equal(new URL(page.url()).pathname, `/s/${instanceId}/tree`)
      // The tree page shows its New button once RequireJS has loaded its scripts, and RequireJS gives
      // up on a script after 7 s (its default waitSeconds): on a machine stalled that long the page
      // stays hidden for good. That page is reloaded once, well inside the idle timeout, and the
      // test says so; after that the button must show, or the failure says what the page saw.
      const newButton = page.locator('#new-dropdown-button')
      const shown = (timeout: number) =>
        newButton.waitFor({ state: 'visible', timeout }).then(
          () => true,
          () => false,
        )
      if (!(await shown(Math.min(10_000, IDLE_MS / 2)))) {
        t.diagnostic(`the tree page New button was hidden after 10 s; reloaded once (${seen.summary()})`)
        await page.reload()
        if (!(await shown(20_000))) {
          const st = await s.command<{ instance: InstanceView }>('GET_STATUS', { instanceId, userId: 'carol' })
          throw new Error(
            `the tree page New button stayed hidden after a reload\n--- page: ${seen.summary()}\n--- instance: ${JSON.stringify(st.body.instance)}`,
          )
        }
      }
      await page.click('#new-dropdown-button')
      const [nb] = await Promise.all([ctx.waitForEvent('page'), page.click('#kernel-python3 a')])
      await nb.waitForURL(new RegExp(`/s/${instanceId}/notebooks/Untitled[0-9]*\\.ipynb`), { timeout: 20_000 })
      await nb.waitForFunction(
        'window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel && Jupyter.notebook.kernel.is_connected()',
        undefined,
        { timeout: 30_000 },
      )
      await nb.locator('.code_cell .CodeMirror').first().click()
      await nb.keyboard.type('print(6*7)')
      await nb.keyboard.press('Shift+Enter')
      const out = nb.locator('.code_cell .output_subarea.output_stream').first()
      await out.waitFor({ timeout: 30_000 })
      assert.equal((await out.textContent())?.trim(), '42')
      pids = sessionPids(s.instanceDir(instanceId))
      assert.ok(pids.length >= 2, `expected Jupyter and a kernel, found ${pids.length} process(es)`)
    } finally {
      await ctx.close()
    }
    const quietAt = Date.now()
    const idle = assertIdleCull(await waitCulled(s, instanceId, 'carol', pids, CULL_DEADLINE_MS), 'carol', 'jupyter')
    t.diagnostic(
      `jupyter ready ${readyMs} ms after the request; culled ${idle} ms after the last activity; processes gone ${Date.now() - quietAt} ms after the browser closed`,
    )
  })
})
