/**
 * End-to-end harness: the real server (`start()`) with the shipped `examples/studiopool.yaml`,
 * real Jupyter / R processes, and headless Debian Chromium through playwright-core.
 *
 * The programs must be installed (CI installs them with apt-get, see .ci/run). When one is
 * missing the suite fails and says which, unless STUDIOPOOL_SKIP_E2E=1 asks to skip it.
 */
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join, resolve } from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { request } from 'undici'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { loadConfig } from '../../src/config/load.js'
import { start, type Running } from '../../src/main.js'
import { endSessionsUnder } from '../../src/providers/local/index.js'
import { waitFor } from '../helpers/wait.js'

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
export const EXAMPLES = join(REPO, 'examples')
export const CHROMIUM = '/usr/bin/chromium'
/** Never a downloaded browser: Debian's chromium, with the switches that keep it quiet and offline. */
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

/** Programs each part needs, with the Debian package that provides it. */
export const PROGRAMS = {
  jupyter: { program: 'jupyter', pkg: 'jupyter-notebook python3-ipykernel' },
  rscript: { program: 'Rscript', pkg: 'r-base-core r-cran-shiny' },
  chromium: { program: CHROMIUM, pkg: 'chromium' },
} as const

function onPath(program: string): boolean {
  if (program.includes('/')) return existsSync(program)
  return (process.env.PATH ?? '').split(delimiter).some((d) => d && existsSync(join(d, program)))
}

/**
 * `undefined` when everything is installed; a skip reason when something is missing and
 * STUDIOPOOL_SKIP_E2E=1. Throws otherwise, so that CI cannot pass without running the suite.
 */
export function e2eSkipReason(): string | undefined {
  const missing = Object.values(PROGRAMS).filter((p) => !onPath(p.program))
  if (missing.length === 0) return undefined
  const what = missing.map((p) => `${p.program} (Debian: ${p.pkg})`).join(', ')
  if (process.env.STUDIOPOOL_SKIP_E2E === '1') return `STUDIOPOOL_SKIP_E2E=1 and missing: ${what}`
  throw new Error(
    `end-to-end tests need ${what}; install them (apt-get install ${missing.map((p) => p.pkg).join(' ')}) or set STUDIOPOOL_SKIP_E2E=1`,
  )
}

/** A minimal cookie jar for one origin: name → value (paths and expiry are not needed here). */
export class CookieJar {
  readonly #c = new Map<string, string>()
  take(setCookie: string | string[] | undefined): void {
    for (const line of setCookie === undefined ? [] : Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const pair = line.split(';', 1)[0]!
      const eq = pair.indexOf('=')
      if (eq > 0) this.#c.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim())
    }
  }
  get(name: string): string | undefined {
    return this.#c.get(name)
  }
  header(): string {
    return [...this.#c].map(([k, v]) => `${k}=${v}`).join('; ')
  }
}

export interface HttpResult {
  status: number
  url: string
  headers: Record<string, string | string[] | undefined>
  text: string
}

/** One HTTP exchange through undici with the jar's cookies; follows same-origin redirects when asked. */
export async function http(
  url: string,
  jar: CookieJar,
  opts: {
    method?: 'GET' | 'POST' | 'PUT' | 'DELETE'
    headers?: Record<string, string>
    body?: string
    follow?: boolean
  } = {},
): Promise<HttpResult> {
  let current = url
  for (let hop = 0; hop < 10; hop++) {
    const res = await request(current, {
      method: opts.method ?? 'GET',
      headers: { ...(opts.headers ?? {}), ...(jar.header() ? { cookie: jar.header() } : {}) },
      body: hop === 0 ? opts.body : undefined,
    })
    jar.take(res.headers['set-cookie'])
    const text = await res.body.text()
    const loc = res.headers.location
    if (opts.follow !== false && res.statusCode >= 300 && res.statusCode < 400 && typeof loc === 'string') {
      const next = new URL(loc, current)
      if (next.origin !== new URL(current).origin) throw new Error(`redirect to another origin: ${next.href}`)
      current = next.href
      continue
    }
    return { status: res.statusCode, url: current, headers: res.headers, text }
  }
  throw new Error(`too many redirects from ${url}`)
}

/** Processes whose working directory is inside `dir` (session apps, Jupyter kernels, R). */
export function processesUnder(dir: string): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const cwd = readlinkSync(`/proc/${name}/cwd`)
      if (cwd === dir || cwd.startsWith(dir + '/')) out.push(Number(name))
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return out
}

/** Members of a process group (from /proc/<pid>/stat, field 5). */
function groupMembers(pgid: number): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[2]) === pgid) out.push(Number(name))
    } catch {
      // gone meanwhile
    }
  }
  return out
}

/**
 * The processes of one local instance: its process group (from the provider's instance.json) and
 * whatever else runs in its directory (Jupyter kernels start their own session). Shiny changes
 * its working directory to the app's, so the group is what finds R.
 */
export function sessionPids(instanceDir: string): number[] {
  const pids = new Set(processesUnder(instanceDir))
  try {
    const rec = JSON.parse(readFileSync(join(instanceDir, 'instance.json'), 'utf8')) as { pgid?: unknown }
    if (typeof rec.pgid === 'number' && rec.pgid > 1) for (const p of groupMembers(rec.pgid)) pids.add(p)
  } catch {
    // no record (yet)
  }
  return [...pids].filter(alive)
}

/** A pid that names a live process (not a zombie waiting to be reaped). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/** The command line of a pid, for messages. */
export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim().slice(0, 200)
  } catch {
    return '?'
  }
}

export interface E2eServer {
  readonly running: Running
  readonly url: string
  readonly origin: string
  readonly adminKey: string
  readonly dataDir: string
  /** Log lines (JSON) the server wrote, for assertions and failure messages. */
  readonly logs: string[]
  /** Every pid seen under the data directory while the suite ran. */
  readonly seenPids: Set<number>
  command<T = Record<string, unknown>>(
    command: string,
    payload: Record<string, unknown>,
  ): Promise<{ status: number; body: T }>
  api<T = Record<string, unknown>>(path: string): Promise<T>
  instanceDir(id: string): string
  outputLog(id: string): string
  close(): Promise<void>
}

/**
 * Starts the server in-process with the shipped example configuration, changed only where a test
 * must be quick: short idle timeouts, a fast worker and activity flush, no warm instances.
 */
export async function startE2eServer(opts: {
  idleTimeout: string
  /** Changes the parsed configuration after the harness's own changes (the widget suite opts templates in). */
  patch?: (doc: Record<string, Record<string, unknown>>) => void
}): Promise<E2eServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'studiopool-e2e-'))
  const doc = parseYaml(readFileSync(join(EXAMPLES, 'studiopool.yaml'), 'utf8')) as Record<
    string,
    Record<string, unknown>
  >
  doc.worker = { ...doc.worker, interval: '500ms' }
  doc.gateway = { ...doc.gateway, activityFlush: '500ms' }
  for (const t of Object.values(doc.templates as Record<string, Record<string, unknown>>)) {
    t.minFree = 0
    t.idleTimeout = opts.idleTimeout
  }
  opts.patch?.(doc)
  // Inline text: `{{configDir}}` is the cwd, which is where the file lives.
  const config = loadConfig({ text: stringifyYaml(doc), env: {}, cwd: EXAMPLES, overrides: { port: 0, dataDir } })

  const logs: string[] = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(line)
      if (logs.length > 5000) logs.splice(0, logs.length - 5000)
      cb()
    },
  })
  let adminKey = ''
  const running = await start({ config, log: pino({ level: 'info' }, sink), onBootstrapKey: (key) => (adminKey = key) })
  if (!adminKey) {
    await running.close()
    throw new Error('no bootstrap admin key was created')
  }
  const url = running.url
  const seenPids = new Set<number>()
  const instancesDir = join(dataDir, 'instances')
  // Session working directories are outside the data directory (the local provider's sessionsDir).
  const sessionsDir = `${dataDir}-sessions`
  const watch = setInterval(() => {
    for (const pid of processesUnder(instancesDir)) seenPids.add(pid)
    for (const pid of processesUnder(sessionsDir)) seenPids.add(pid)
    for (const id of existsSync(instancesDir) ? readdirSync(instancesDir) : [])
      for (const pid of sessionPids(join(instancesDir, id))) seenPids.add(pid)
  }, 200)
  watch.unref()

  const auth = { authorization: `Bearer ${adminKey}` }
  return {
    running,
    url,
    origin: new URL(url).origin,
    adminKey,
    dataDir,
    logs,
    seenPids,
    async command<T>(command: string, payload: Record<string, unknown>) {
      const res = await request(`${url}/api/commands`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ command, payload }),
      })
      return { status: res.statusCode, body: (await res.body.json()) as T }
    },
    async api<T>(path: string) {
      const res = await request(`${url}${path}`, { headers: auth })
      const body = (await res.body.json()) as T
      if (res.statusCode !== 200) throw new Error(`GET ${path}: ${res.statusCode} ${JSON.stringify(body)}`)
      return body
    },
    instanceDir: (id) => join(instancesDir, id),
    outputLog(id) {
      try {
        return readFileSync(join(instancesDir, id, 'output.log'), 'utf8').slice(-3000)
      } catch {
        return '(no output.log)'
      }
    },
    async close() {
      clearInterval(watch)
      for (const pid of processesUnder(instancesDir)) seenPids.add(pid)
      for (const pid of processesUnder(sessionsDir)) seenPids.add(pid)
      for (const id of existsSync(instancesDir) ? readdirSync(instancesDir) : [])
        for (const pid of sessionPids(join(instancesDir, id))) seenPids.add(pid)
      await running.close()
      // The local provider leaves processes running on close (a restarted server adopts them);
      // a test run must not: everything that ran under the data directory is killed by pid.
      for (const pid of seenPids) {
        if (alive(pid)) {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {
            // already gone
          }
        }
      }
      await waitFor('every session process to exit', () => ([...seenPids].some(alive) ? undefined : true), 10_000)
      // Killed behind the provider's back, the sessions' namespaces and veths would outlive them.
      endSessionsUnder(dataDir, { pools: [config.pool.id], dropFirewall: true })
      rmSync(dataDir, { recursive: true, force: true })
      rmSync(sessionsDir, { recursive: true, force: true })
    },
  }
}

export interface InstanceView {
  instanceId: string
  state: string
  failureReason: string | null
  endReason: string | null
  readyAt: string | null
  lastActivityAt: string | null
  endedAt: string | null
}

export interface HistoryRow {
  instanceId: string
  userId: string
  template: string
  endedAt: string | null
  endReason: string | null
  durationSeconds: number | null
}

/** REQUEST_SESSION, then GET_STATUS until ready (fails with the app's output when it does not start). */
export async function requestReady(
  s: E2eServer,
  userId: string,
  template: string,
  timeoutMs = 60_000,
): Promise<{ instanceId: string; url: string; readyMs: number }> {
  const t0 = Date.now()
  const r = await s.command<{ instanceId: string; url: string; state: string }>('REQUEST_SESSION', { userId, template })
  if (r.status !== 200) throw new Error(`REQUEST_SESSION ${template}: ${r.status} ${JSON.stringify(r.body)}`)
  const { instanceId, url } = r.body
  await waitFor(
    `${template} instance ${instanceId} to be ready`,
    async () => {
      const st = await s.command<{ instance: InstanceView }>('GET_STATUS', { instanceId, userId })
      const inst = st.body.instance
      if (inst.state === 'failed' || inst.state === 'terminated') {
        throw new FatalError(
          `${template} instance ${instanceId} ${inst.state}: ${inst.failureReason}\n--- output.log ---\n${s.outputLog(instanceId)}`,
        )
      }
      return inst.state === 'ready' ? true : undefined
    },
    timeoutMs,
    50,
  ).catch((err: Error) => {
    throw err instanceof FatalError ? err : new Error(`${err.message}\n--- output.log ---\n${s.outputLog(instanceId)}`)
  })
  return { instanceId, url, readyMs: Date.now() - t0 }
}

class FatalError extends Error {}

/**
 * Waits until the instance's assignment has ended (the worker culled it), then checks that each
 * of `pids` (the session's processes, taken while it ran) has exited and that nothing else still
 * runs in its directory. Returns the history row and the instance as the API shows it.
 */
export async function waitCulled(
  s: E2eServer,
  instanceId: string,
  userId: string,
  pids: readonly number[],
  timeoutMs: number,
): Promise<{ row: HistoryRow; instance: InstanceView }> {
  const row = await waitFor(
    `instance ${instanceId} to be culled`,
    async () => {
      const h = await s.api<{ history: HistoryRow[] }>(`/api/v1/history?instanceId=${instanceId}`)
      const r = h.history.find((x) => x.instanceId === instanceId)
      return r?.endedAt ? r : undefined
    },
    timeoutMs,
    200,
  )
  const dir = s.instanceDir(instanceId)
  const left = () => [...new Set([...pids, ...sessionPids(dir)])].filter(alive)
  await waitFor(`the processes of ${instanceId} to exit`, () => (left().length === 0 ? true : undefined), 15_000).catch(
    (err: Error) => {
      throw new Error(
        `${err.message}: ${left()
          .map((p) => `${p} ${cmdline(p)}`)
          .join('; ')}`,
      )
    },
  )
  // The row moves stopping → terminated once the provider's destroy has returned.
  const instance = await waitFor(
    `instance ${instanceId} to be terminated`,
    async () => {
      const st = await s.command<{ instance: InstanceView }>('GET_STATUS', { instanceId, userId })
      if (st.status !== 200) throw new Error(`GET_STATUS after the cull: ${st.status} ${JSON.stringify(st.body)}`)
      return st.body.instance.state === 'terminated' ? st.body.instance : undefined
    },
    15_000,
  )
  return { row, instance }
}
