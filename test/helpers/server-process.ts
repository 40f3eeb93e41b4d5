import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { endSessionsUnder } from '../../src/providers/local/index.js'

export const REPO = resolve(fileURLToPath(import.meta.url), '../../..')
export const BIN = join(REPO, 'bin/studiopool.js')
export const DEMO_APP = join(REPO, 'src/demo-app/server.mjs')

export interface ServerProcess {
  readonly child: ChildProcess
  readonly pid: number
  readonly url: string
  /** The admin key printed on first start (undefined on later starts of the same data dir). */
  readonly adminKey: string | undefined
  output(): string
  kill(signal?: NodeJS.Signals): Promise<void>
}

/** Starts `studiopool serve` as a real process and waits until it listens. */
export async function spawnServer(opts: {
  cwd: string
  config: string
  env?: Record<string, string>
  args?: string[]
  timeoutMs?: number
  runAs?: number
  /**
   * Without it the server starts `--degraded`: the example configuration's rstudio and rstudio-ec2
   * templates cannot serve on a test machine, which `serve` refuses with exit 2 (issue 17).
   */
  strict?: boolean
}): Promise<ServerProcess> {
  const cfgPath = join(opts.cwd, 'studiopool.yaml')
  writeFileSync(cfgPath, opts.config)
  const argv = [
    BIN,
    'serve',
    '--config',
    cfgPath,
    '--port',
    '0',
    ...(opts.strict ? [] : ['--degraded']),
    ...(opts.args ?? []),
  ]
  // `runAs`: the server itself as that uid (and gid), without supplementary groups (tests run as root).
  const [bin, args] =
    opts.runAs === undefined
      ? [process.execPath, argv]
      : [
          'setpriv',
          [`--reuid=${opts.runAs}`, `--regid=${opts.runAs}`, '--clear-groups', '--', process.execPath, ...argv],
        ]
  const child = spawn(bin, args, {
    cwd: opts.cwd,
    env: { PATH: process.env.PATH ?? '', HOME: opts.cwd, STUDIOPOOL_LOG_LEVEL: 'warn', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()))
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000)
  let url: string | undefined
  while (!url) {
    const m = /listening on (http:\/\/\S+)/.exec(out)
    if (m) url = m[1]
    else if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`server exited early (${child.exitCode ?? child.signalCode}):\n${out}`)
    else if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`server did not start:\n${out}`)
    } else await new Promise((r) => setTimeout(r, 50))
  }
  // The first admin key is in a 0600 file in the data directory; the banner says which (never the key).
  const keyFile = /first admin key written to (\S+) /.exec(out)?.[1]
  const adminKey = keyFile ? readFileSync(keyFile, 'utf8').trim() : undefined
  return {
    child,
    pid: child.pid!,
    url: url!,
    adminKey,
    output: () => out,
    async kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill(signal)
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(t)
    },
  }
}

/** pids of the local provider's processes under a data dir that are alive now. */
export function livePids(dataDir: string): Map<string, number> {
  const dir = join(dataDir, 'instances')
  const out = new Map<string, number>()
  if (!existsSync(dir)) return out
  for (const id of readdirSync(dir)) {
    const f = join(dir, id, 'instance.json')
    if (!existsSync(f)) continue
    try {
      const rec = JSON.parse(readFileSync(f, 'utf8')) as { pid: number; terminatedAt?: number | null }
      if (isAlive(rec.pid)) out.set(id, rec.pid)
    } catch {
      // a record being written; skip it this time
    }
  }
  return out
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return !/\) Z /.test(stat)
  } catch {
    return false
  }
}

/**
 * Kills every local-provider process group under a data dir (test cleanup): by the group of each
 * instance record, whether or not its leader still lives (a kernel may outlive its notebook server),
 * and gives back the sessions' namespaces, veths and slot claims.
 */
export function killAll(dataDir: string): void {
  const dir = join(dataDir, 'instances')
  if (!existsSync(dir)) return
  for (const id of readdirSync(dir)) {
    const f = join(dir, id, 'instance.json')
    if (!existsSync(f)) continue
    try {
      const rec = JSON.parse(readFileSync(f, 'utf8')) as { pid?: number; pgid?: number }
      const pgid = rec.pgid ?? rec.pid
      if (pgid && pgid > 1) process.kill(-pgid, 'SIGKILL')
    } catch {
      // gone already, or a record being written
    }
  }
  // What the sessions held on the host (namespace, veth, slot claim, firewall) goes with them.
  endSessionsUnder(dataDir, { dropFirewall: true })
}

export async function api<T = any>(
  url: string,
  key: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await request(new URL(path, url), {
    method: method as 'GET',
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.body.text()
  return {
    status: res.statusCode,
    body: (text && String(res.headers['content-type']).includes('json') ? JSON.parse(text) : text) as T,
  }
}
