import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, writeSync } from 'node:fs'
import { createServer } from 'node:net'
import { resolve } from 'node:path'
import { ProviderError } from '../../domain/errors.js'
import type { InstanceSpec } from '../provider.js'
import { baseTokens, identityEnv, substitute } from '../session-env.js'
import type { SessionSlot } from './local-network.js'
import type { LocalTemplateSettings } from './local-provider-config.js'
import { findExecutable } from './local-proc.js'
import { NAME } from './local-record.js'

/** Starting one session process: its program, its environment, its port, the spawn itself. */

export const HOST = '127.0.0.1'
/** Inside a network namespace every port is free: the app always gets this one (no port race). */
export const NETNS_PORT = 8888
/** Variables of the server's environment a session process inherits; nothing else (no keys, no secrets). */
const PASS_ENV = ['PATH', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'LC_MESSAGES', 'TZ', 'TERM']

/** Where one session runs: its address, its home, and (isolated) its slot. */
export interface SessionPlace {
  readonly host: string
  readonly port: number
  readonly home: string
  readonly slot: SessionSlot | null
}

/** The `{{token}}`s a template's command and environment may use. */
export function sessionTokens(spec: InstanceSpec, at: SessionPlace): Record<string, string> {
  return { ...baseTokens(spec, at.port), workdir: at.home, host: at.host }
}

/**
 * The program to exec for argv[0]: `node` is the server's own binary; a path is relative to the
 * server's cwd (not the workdir); isolated, a bare name is looked up on the server's PATH.
 * Checked here because, isolated, the spawned process is a wrapper that would start anyway.
 * @throws ProviderError when it is not there or not executable.
 */
export function sessionProgram(argv0: string, isolated: boolean): string {
  let program = argv0
  if (program === 'node') program = process.execPath
  else if (program.includes('/')) program = resolve(program)
  else if (isolated) program = findExecutable(program, process.env.PATH, process.cwd()) ?? program
  if (!findExecutable(program, process.env.PATH, process.cwd()))
    throw new ProviderError(NAME, `cannot start "${argv0}": ENOENT (not found or not executable)`)
  return program
}

/** The session's whole environment: a few of the server's variables, the template's, and ours. */
export function sessionEnv(
  spec: InstanceSpec,
  settings: LocalTemplateSettings,
  at: SessionPlace,
  scope: string,
  tokens: Readonly<Record<string, string>>,
): Record<string, string> {
  const env: Record<string, string> = {}
  for (const k of PASS_ENV) {
    const v = process.env[k]
    if (v !== undefined) env[k] = v
  }
  const account = at.slot ? `sp${at.slot.uid}` : (process.env.USER ?? process.env.LOGNAME ?? '')
  if (account) Object.assign(env, { USER: account, LOGNAME: account })
  // An isolated session never gets the server's HOME, whatever the template says.
  env.HOME = settings.home === 'inherit' && !at.slot && process.env.HOME ? process.env.HOME : at.home
  for (const [k, v] of Object.entries(settings.env)) env[k] = substitute(v, tokens)
  Object.assign(env, { PORT: String(at.port), HOST: at.host, STUDIOPOOL_SCOPE: scope }, identityEnv(spec))
  return env
}

/**
 * Spawns `bin args` detached (it leads its own process group), stdout and stderr appended to
 * `logPath` after a `--- studiopool` header line. Resolves with the child and its pid, or with the
 * reason it could not start.
 */
export async function spawnDetached(
  bin: string,
  args: readonly string[],
  opts: {
    readonly cwd: string
    readonly env: Record<string, string>
    readonly logPath: string
    readonly header: string
  },
): Promise<{ child: ChildProcess; pid: number } | { error: Error }> {
  const fd = openSync(opts.logPath, 'a', 0o600)
  let child: ChildProcess
  try {
    writeSync(fd, `--- studiopool ${new Date().toISOString()}: ${opts.header}\n`)
    child = spawn(bin, args, { cwd: opts.cwd, env: opts.env, detached: true, stdio: ['ignore', fd, fd] })
  } finally {
    closeSync(fd)
  }
  if (child.pid !== undefined) return { child, pid: child.pid }
  const error = await new Promise<Error>((res) => {
    child.once('error', res)
    setTimeout(() => res(new Error('spawn failed')), 1000).unref()
  })
  return { error }
}

/** Hands out free loopback ports, never the same one twice within a minute (two creates in a row, before either binds). */
export class PortPicker {
  readonly #recent = new Map<number, number>()

  /** Binds port 0 on loopback, reads the port, closes; skips ports handed out in the last minute. */
  async next(): Promise<number> {
    const now = Date.now()
    for (const [p, at] of this.#recent) if (now - at > 60_000) this.#recent.delete(p)
    for (let attempt = 0; attempt < 20; attempt++) {
      const port = await new Promise<number>((res, rej) => {
        const srv = createServer()
        srv.unref()
        srv.once('error', rej)
        srv.listen(0, HOST, () => {
          const addr = srv.address()
          const p = typeof addr === 'object' && addr ? addr.port : 0
          srv.close(() => res(p))
        })
      })
      if (port > 0 && !this.#recent.has(port)) {
        this.#recent.set(port, now)
        return port
      }
    }
    throw new ProviderError(NAME, 'no free port on 127.0.0.1', { retryable: true })
  }
}
