import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { chromium, type Browser, type BrowserContext } from 'playwright-core'
import { loadConfig } from '../../src/config/load.js'
import { DEMO_APP_SCRIPT } from '../../src/demo-app/index.js'
import { start, type Running } from '../../src/main.js'

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
]

/** Debian's chromium, never a downloaded one. */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    headless: true,
    timeout: 60_000,
  })
}

/**
 * Closes a browser context or page, bounded: Chromium's close has no timeout of its own, and a close that
 * never answers (seen once in CI: a test sat 10 minutes in its `finally`) must not hang the suite. What did
 * not close goes with the browser at the end of the file.
 */
export async function closeBounded(what: { close(): Promise<void> }, name = 'context', ms = 15_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), ms)))
  const outcome = await Promise.race([what.close().then(() => 'closed' as const), late])
  clearTimeout(timer)
  if (outcome === 'late') console.log(`# ${name}.close() did not finish in ${ms / 1000} s; left to the browser's close`)
}

/** A demo template on the local provider: real processes running the demo session app. */
export function demoTemplateYaml(name: string, extra: Record<string, string> = {}): string {
  const lines = [
    `  ${name}:`,
    `    displayName: ${JSON.stringify(extra.displayName ?? `Demo ${name}`)}`,
    `    description: ${JSON.stringify(extra.description ?? 'A small web app shipped with studiopool.')}`,
    `    provider: local`,
    `    minFree: ${extra.minFree ?? 0}`,
    `    maxInstances: ${extra.maxInstances ?? 5}`,
    `    startTimeout: ${extra.startTimeout ?? '30s'}`,
    `    pathMode: strip`,
    `    healthPath: /healthz`,
    ...(extra.allowedGroups ? [`    allowedGroups: ${extra.allowedGroups}`] : []),
    ...(extra.pricePerHour ? [`    pricePerHour: ${extra.pricePerHour}`] : []),
    `    local:`,
    `      command: ${JSON.stringify([process.execPath, DEMO_APP_SCRIPT, '--port', '{{port}}', '--base-path', '{{basePath}}', ...(extra.startupDelayMs ? ['--startup-delay-ms', extra.startupDelayMs] : [])])}`,
    `      stopGrace: 2s`,
  ]
  return lines.join('\n')
}

export interface TestServer {
  readonly running: Running
  readonly url: string
  readonly adminKey: string
  readonly dataDir: string
  /** Stops the server, kills any demo process it left, removes the data directory. */
  close(): Promise<void>
}

/**
 * Starts the real server in-process (`start()` from src/main.ts) on 127.0.0.1 port 0 with the given
 * YAML (templates and dashboard sections), a fresh data directory and a silent logger.
 */
export async function startServer(yaml: string): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'sp-web-'))
  const config = loadConfig({ text: yaml, env: {}, cwd: dataDir, overrides: { port: 0, dataDir, host: '127.0.0.1' } })
  let adminKey = ''
  const running = await start({
    config,
    log: pino({ level: process.env.TEST_LOG ?? 'silent' }),
    onBootstrapKey: (k) => (adminKey = k),
  })
  const pids = new Set<number>()
  const notePids = async () => {
    const rows = await running.store!.listInstances({ limit: 10_000 }).catch(() => [])
    for (const r of rows) {
      const pid = Number(r.providerRef?.split(':')[0])
      if (Number.isInteger(pid) && pid > 1) pids.add(pid)
    }
  }
  return {
    running,
    url: running.url,
    adminKey,
    dataDir,
    async close() {
      await notePids()
      await running.close()
      for (const pid of pids) {
        for (const target of [-pid, pid]) {
          try {
            process.kill(target, 'SIGKILL')
          } catch {
            // already gone
          }
        }
      }
      rmSync(dataDir, { recursive: true, force: true })
      rmSync(`${dataDir}-sessions`, { recursive: true, force: true })
    },
  }
}

/** Signs a browser context in with the dev login form. */
export async function devLogin(ctx: BrowserContext, base: string, user: string, groups = ''): Promise<void> {
  const page = await ctx.newPage()
  await page.goto(`${base}/login`)
  await page.getByLabel('User name').fill(user)
  if (groups) await page.getByLabel(/^Groups/).fill(groups)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForURL(`${base}/`)
  await page.close()
}

/** Dev login without a browser: returns the `name=value` of the session cookie. */
export async function fetchLogin(base: string, user: string, groups = ''): Promise<string> {
  const page = await fetch(`${base}/login`)
  const html = await page.text()
  const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1]
  const state = page.headers
    .getSetCookie()
    .find((c) => c.includes('_login='))
    ?.split(';')[0]
  if (!csrf || !state) throw new Error(`no login form (status ${page.status})`)
  const res = await fetch(`${base}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: state, 'content-type': 'application/x-www-form-urlencoded', origin: base },
    body: new URLSearchParams({ csrf, user, groups, next: '/' }),
  })
  const cookie = res.headers.getSetCookie().find((c) => /^studiopool_session=[^;]/.test(c))
  if (res.status !== 303 || !cookie) throw new Error(`dev login failed with ${res.status}`)
  return cookie.split(';')[0]!
}

/** The form token on a dashboard page. */
export async function formToken(base: string, cookie: string, path = '/'): Promise<string> {
  const html = await (await fetch(base + path, { headers: { cookie } })).text()
  const m = /name="csrf" value="([^"]+)"/.exec(html)
  if (!m) throw new Error(`no form token on ${path}`)
  return m[1]!
}
