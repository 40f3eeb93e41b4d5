/**
 * Starts the real server in-process (`start()` from src/main.ts) on 127.0.0.1:0 against a real SQLite
 * file or a fresh Postgres schema, with templates on the `fake` provider whose instances report the
 * address of a tiny local HTTP server (so health probes pass and warm instances become `ready`
 * without any processes).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { request } from 'undici'
import { loadConfig } from '../../src/config/load.js'
import { start, type Running } from '../../src/main.js'
import type { Store } from '../../src/store/store.js'
import { freshPgUrl, PG_SKIP } from '../helpers/pg.js'

export type StoreKind = 'sqlite' | 'postgres'

/** STORES=sqlite,postgres (default both); STUDIOPOOL_SKIP_PG=1 drops postgres. */
export const STORES: StoreKind[] = (process.env.STORES ?? 'sqlite,postgres')
  .split(',')
  .map((s) => s.trim())
  .filter((s): s is StoreKind => (s === 'sqlite' || s === 'postgres') && !(s === 'postgres' && PG_SKIP))

/** An HTTP server that answers 200 to everything: the "app" behind every fake instance. */
export async function startAppStub(): Promise<{ url: string; close(): Promise<void> }> {
  const srv: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const { port } = srv.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections()
        srv.close(() => r())
      }),
  }
}

export async function storeYaml(kind: StoreKind, dir: string): Promise<string> {
  if (kind === 'sqlite') return `store:\n  driver: sqlite\n  path: ${JSON.stringify(join(dir, 'studiopool.db'))}\n`
  return `store:\n  driver: postgres\n  url: ${JSON.stringify(await freshPgUrl())}\n  poolSize: 20\n`
}

export interface TestServer {
  readonly running: Running
  readonly url: string
  readonly store: Store
  readonly adminKey: string
  readonly dir: string
  close(): Promise<void>
}

/**
 * `yaml` holds everything but `store:` (added here). `env` goes to loadConfig only (never process.env).
 */
export async function startServer(
  kind: StoreKind,
  yaml: string,
  env: Record<string, string> = {},
): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), `sp-api-${kind}-`))
  const text = `${await storeYaml(kind, dir)}${yaml}`
  const config = loadConfig({ text, env, cwd: dir, overrides: { port: 0, dataDir: dir, logLevel: 'silent' } })
  let adminKey = ''
  const running = await start({ config, log: pino({ level: 'silent' }), onBootstrapKey: (k) => (adminKey = k) })
  if (!adminKey) throw new Error('no bootstrap admin key')
  return {
    running,
    url: running.url,
    store: running.store!,
    adminKey,
    dir,
    async close() {
      await running.close()
      rmSync(dir, { recursive: true, force: true })
      rmSync(`${dir}-sessions`, { recursive: true, force: true })
    },
  }
}

export interface Reply {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly text: string
  readonly json: any
}

/** One HTTP call; `body` objects are sent as JSON, strings and Buffers as they are. */
export async function call(
  base: string,
  method: string,
  path: string,
  opts: { key?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...(opts.key ? { authorization: `Bearer ${opts.key}` } : {}) }
  let body: string | Buffer | undefined
  if (opts.body !== undefined) {
    if (typeof opts.body === 'string' || Buffer.isBuffer(opts.body)) body = opts.body
    else {
      body = JSON.stringify(opts.body)
      headers['content-type'] = 'application/json'
    }
  }
  Object.assign(headers, opts.headers ?? {})
  const r = await request(`${base}${path}`, { method: method as 'GET', headers, body })
  const text = await r.body.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: r.statusCode, headers: r.headers, text, json }
}

export const command = (
  base: string,
  key: string | undefined,
  cmd: unknown,
  payload?: unknown,
  path = '/api/commands',
) => call(base, 'POST', path, { key, body: payload === undefined ? { command: cmd } : { command: cmd, payload } })

export { waitFor } from '../helpers/wait.js'

/** Everything a request could change, in a comparable form (key lastUsedAt excluded: a valid key's use is recorded). */
export async function snapshot(store: Store): Promise<string> {
  const inst = await store.listInstances({
    states: ['queued', 'provisioning', 'starting', 'ready', 'stopping', 'terminated', 'suspended', 'failed'],
  })
  const history = await store.listHistory({ limit: 100_000 })
  const keys = await store.listKeys()
  const audit = await store.listAudit({ limit: 100_000 })
  return JSON.stringify({
    instances: inst.map((i) => [i.id, i.state, i.ownerId, i.keyName, i.updatedAt, i.generation, i.tags]).sort(),
    history: history.map((h) => [h.id, h.instanceId, h.userId, h.endedAt, h.endReason]).sort(),
    keys: keys.map((k) => [k.id, k.name, k.role, k.revokedAt]).sort(),
    audit: audit.length,
  })
}

/** A body must never carry a stack trace or source paths. */
export function assertNoStack(text: string): void {
  if (/\bat [^\n]*\(?[^\s]*:\d+:\d+\)?|node_modules|\.ts:\d+|Error: .*\n\s+at /.test(text))
    throw new Error(`stack trace in body: ${text.slice(0, 300)}`)
}
