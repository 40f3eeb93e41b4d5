/**
 * Shared-pool tests (issue 14): the real server in-process with `mode: shared` templates on the
 * local provider (real R processes: Shiny, plumber), users signed in with the dev login.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { request } from 'undici'
import WebSocket from 'ws'
import { stringify as stringifyYaml } from 'yaml'
import { loadConfig } from '../../src/config/load.js'
import { start, type Running } from '../../src/main.js'
import { endSessionsUnder } from '../../src/providers/local/index.js'
import type { SharedStatus } from '../../src/pool/pool-service.js'
import { alive, processesUnder, sessionPids } from '../e2e/harness.js'
import { waitFor } from '../helpers/wait.js'

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures')

export const shinyCommand = [
  'Rscript',
  '-e',
  `Sys.setenv(APP_INSTANCE = '{{instanceId}}'); shiny::runApp('${join(FIXTURES, 'shiny')}', host = '{{host}}', port = {{port}}, launch.browser = FALSE)`,
]
export const plumberCommand = [
  'Rscript',
  '-e',
  `Sys.setenv(APP_INSTANCE = '{{instanceId}}'); plumber::pr_run(plumber::pr('${join(FIXTURES, 'plumber', 'api.R')}'), host = '{{host}}', port = {{port}}, docs = FALSE)`,
]

export interface SharedServer {
  readonly running: Running
  readonly url: string
  readonly logs: string[]
  readonly adminKey: string
  shared(template: string): Promise<SharedStatus>
  /** The processes of one local instance (its process group and what runs in its directory). */
  pids(instanceId: string): number[]
  close(): Promise<void>
}

/** Starts the server with these templates (YAML objects), a fast worker and activity flush, dev login. */
/** `extra`: more top-level configuration (budgets, cost) beside the templates. */
export async function startSharedServer(
  templates: Record<string, Record<string, unknown>>,
  extra: Record<string, unknown> = {},
): Promise<SharedServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'studiopool-shared-'))
  const doc = {
    server: { host: '127.0.0.1', logLevel: 'info' },
    auth: { mode: 'keys', bootstrapAdmin: true },
    pool: { maxInstances: 20 },
    worker: { interval: '500ms' },
    gateway: { activityFlush: '500ms' },
    // The test is the only user of this machine's loopback (docs/security.md "Logins").
    dashboard: { login: 'dev', admins: ['admin'], allowDevLoginFromSessions: true },
    templates,
    ...extra,
  }
  const config = loadConfig({ text: stringifyYaml(doc), env: {}, cwd: FIXTURES, overrides: { port: 0, dataDir } })
  const logs: string[] = []
  let adminKey = ''
  const sink = {
    write(line: string) {
      logs.push(line)
      if (logs.length > 5000) logs.splice(0, logs.length - 5000)
    },
  }
  const running = await start({ config, log: pino({ level: 'info' }, sink), onBootstrapKey: (k) => (adminKey = k) })
  const url = running.url
  const instancesDir = join(dataDir, 'instances')
  const seen = new Set<number>()
  const watch = setInterval(() => {
    for (const id of existsSync(instancesDir) ? readdirSync(instancesDir) : [])
      for (const pid of sessionPids(join(instancesDir, id))) seen.add(pid)
  }, 200)
  watch.unref()
  return {
    running,
    url,
    logs,
    adminKey,
    async shared(template) {
      const res = await request(`${url}/api/v1/shared`, { headers: { authorization: `Bearer ${adminKey}` } })
      const body = (await res.body.json()) as { shared: SharedStatus[] }
      const s = body.shared.find((x) => x.template === template)
      if (!s) throw new Error(`no shared template ${template}`)
      return s
    },
    pids: (id) => sessionPids(join(instancesDir, id)),
    async close() {
      clearInterval(watch)
      for (const id of existsSync(instancesDir) ? readdirSync(instancesDir) : [])
        for (const pid of sessionPids(join(instancesDir, id))) seen.add(pid)
      for (const pid of processesUnder(`${dataDir}-sessions`)) seen.add(pid)
      await running.close()
      for (const pid of seen)
        if (alive(pid))
          try {
            process.kill(pid, 'SIGKILL')
          } catch {
            // gone
          }
      await waitFor('every session process to exit', () => ([...seen].some(alive) ? undefined : true), 10_000)
      endSessionsUnder(dataDir, { pools: [config.pool.id], dropFirewall: true })
      rmSync(dataDir, { recursive: true, force: true })
      rmSync(`${dataDir}-sessions`, { recursive: true, force: true })
    },
  }
}

/** Running (ready), draining and starting instances of a shared template, from the admin API. */
export function census(s: SharedStatus): { ready: number; draining: number; starting: number; total: number } {
  const live = s.instances.filter((i) => i.state !== 'stopping')
  return {
    ready: live.filter((i) => i.state === 'ready' && !i.draining).length,
    draining: live.filter((i) => i.draining).length,
    starting: live.filter((i) => i.state === 'provisioning' || i.state === 'starting').length,
    total: live.length,
  }
}

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']
/**
 * An `unavailable` schedule whose one window is on the day two days from now (UTC): the template is
 * outside its schedule while any test runs, whatever the hour.
 */
export const CLOSED_SCHEDULE = {
  timezone: 'UTC',
  windows: [{ days: DAYS[(new Date().getUTCDay() + 2) % 7]!, from: '08:00', to: '18:00', minFree: 1 }],
  outside: 'unavailable',
}

/** The status a WebSocket upgrade with this cookie gets: 101 when it opens, 0 when the connection fails. */
export function wsStatus(url: string, cookie: string): Promise<number> {
  return new Promise<number>((resolve) => {
    const ws = new WebSocket(url, { headers: { cookie } })
    ws.on('unexpected-response', (_q, r) => resolve(r.statusCode ?? 0))
    ws.on('open', () => {
      ws.close()
      resolve(101)
    })
    ws.on('error', () => resolve(0))
  })
}
