import { spawn } from 'node:child_process'
import type { Config } from '../config/types.js'

export type HookConfig = Config['hooks'][number]

/** What one run of a hook came to; its audit row (`event: hook`) and log line carry it. */
export interface HookOutcome {
  readonly outcome: 'ok' | 'failed' | 'timeout' | 'spawn-error'
  readonly exitCode: number | null
  readonly signal: string | null
  readonly durationMs: number
  /** The first bytes of stderr (or the spawn error), with the hook's `env` values blanked out. */
  readonly stderr: string
}

/** After SIGTERM to the process group, how long a hook has before SIGKILL. */
export const KILL_GRACE_MS = 5_000
const STDERR_BYTES = 1024
/** What a hook inherits from the server's environment; nothing else (the server's secrets stay out). */
const INHERITED = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR']

/** The event as STUDIOPOOL_* variables (docs/hooks.md "Environment"). */
export function hookEnv(
  type: string,
  eventId: string,
  data: Readonly<Record<string, unknown>>,
): Record<string, string> {
  const s = (v: unknown) => (typeof v === 'string' || typeof v === 'number' ? String(v) : '')
  return {
    STUDIOPOOL_EVENT: type,
    STUDIOPOOL_EVENT_ID: eventId,
    STUDIOPOOL_INSTANCE_ID: s(data['instanceId']),
    STUDIOPOOL_TEMPLATE: s(data['template']),
    STUDIOPOOL_USER: s(data['userId']),
    STUDIOPOOL_ADDRESS: s(data['address']),
    STUDIOPOOL_HOST: s(data['host']),
    STUDIOPOOL_REASON: s(data['reason']),
    STUDIOPOOL_SESSION_URL: s(data['url']),
  }
}

/**
 * Runs `hook.command` (argv, no shell) in its own process group with `stdin` written to it and the
 * environment `INHERITED` + `hook.env` + `vars`. Past `hook.timeoutMs` the group gets SIGTERM, then
 * SIGKILL after KILL_GRACE_MS, and the run is a `timeout`. `signal` aborts (shutdown): the group is
 * killed and the promise resolves with `timeout`. Never rejects.
 */
export function runHook(
  hook: HookConfig,
  stdin: string,
  vars: Record<string, string>,
  parentEnv: NodeJS.ProcessEnv,
  signal?: AbortSignal,
): Promise<HookOutcome> {
  const started = performance.now()
  const env: Record<string, string> = {}
  for (const k of INHERITED) if (parentEnv[k] !== undefined) env[k] = parentEnv[k]
  Object.assign(env, hook.env, vars)
  const secrets = Object.values(hook.env).filter((v) => v.length >= 4)
  const clean = (text: string) => secrets.reduce((t, v) => t.split(v).join('[redacted]'), text).slice(0, STDERR_BYTES)
  return new Promise((resolveRun) => {
    let stderr = ''
    let timedOut = false
    let done = false
    const finish = (o: Omit<HookOutcome, 'durationMs' | 'stderr'>, extra = '') => {
      if (done) return
      done = true
      clearTimeout(timer)
      clearTimeout(killer)
      signal?.removeEventListener('abort', onAbort)
      resolveRun({ ...o, durationMs: Math.round(performance.now() - started), stderr: clean(stderr + extra) })
    }
    const child = spawn(hook.command[0]!, hook.command.slice(1), {
      env,
      detached: true, // its own process group, so a timeout kills what it started too
      stdio: ['pipe', 'ignore', 'pipe'],
    })
    const killGroup = (sig: NodeJS.Signals) => {
      try {
        if (child.pid) process.kill(-child.pid, sig)
      } catch {
        // already gone
      }
    }
    let killer: NodeJS.Timeout | undefined
    const expire = () => {
      timedOut = true
      killGroup('SIGTERM')
      killer = setTimeout(() => {
        killGroup('SIGKILL')
        // A grandchild that left the group may hold stderr open: do not wait for it.
        setTimeout(() => finish({ outcome: 'timeout', exitCode: null, signal: 'SIGKILL' }), 1_000).unref()
      }, KILL_GRACE_MS)
      killer.unref()
    }
    const timer = setTimeout(expire, hook.timeoutMs)
    const onAbort = () => expire()
    signal?.addEventListener('abort', onAbort, { once: true })
    child.stderr.on('data', (b: Buffer) => {
      if (stderr.length < STDERR_BYTES * 4) stderr += b.toString('utf8')
    })
    child.stdin.on('error', () => {}) // a hook that does not read stdin
    child.stdin.end(stdin)
    child.on('error', (err) => finish({ outcome: 'spawn-error', exitCode: null, signal: null }, err.message))
    child.on('close', (code, sig) => {
      if (timedOut) finish({ outcome: 'timeout', exitCode: code, signal: sig })
      else finish({ outcome: code === 0 ? 'ok' : 'failed', exitCode: code, signal: sig })
    })
  })
}
