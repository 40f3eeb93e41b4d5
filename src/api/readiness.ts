import type { Store } from '../store/store.js'

/** How long /readyz waits for the store before it says "not ready" (a frozen Postgres must not hang it). */
export const READY_PROBE_TIMEOUT_MS = 2_000
/** A failed write this recent makes /readyz fail even when the probe write succeeds (a fuller disk than the probe's one row). */
export const RECENT_WRITE_ERROR_MS = 30_000

export interface Readiness {
  readonly ready: boolean
  /** Each check: `ok`, or why not. */
  readonly checks: Record<string, string>
  /** Several replicas (docs/ha.md): whether this one leads the worker, and how far its route table lags. */
  readonly replica?: ReplicaStatus
}

export interface ReplicaStatus {
  /** null: this replica runs no worker. */
  readonly worker: {
    readonly leading: boolean
    readonly epoch: number | null
    readonly leadingSinceMs: number | null
  } | null
  /** null: this replica's routes come only from its own pool (one process, SQLite). */
  readonly routes: {
    readonly mode: 'notify' | 'poll'
    readonly sinceResyncMs: number | null
    readonly lastDelayMs: number | null
  } | null
}

export interface ReadinessParts {
  readonly store?: Store
  /** Template name → why it cannot serve, or undefined when it can. */
  readonly templates?: readonly { readonly name: string; readonly unavailable: string | undefined }[]
  /** True from SIGTERM on: load balancers stop sending new work before the listener closes. */
  readonly draining?: () => boolean
  /** Role-specific checks (the gateway role: has it a route table). Each returns undefined when fine. */
  readonly extra?: Record<string, () => string | undefined>
  readonly replica?: () => ReplicaStatus
}

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms)
    t.unref()
    p.then(
      (v) => {
        clearTimeout(t)
        resolve(v)
      },
      (err: unknown) => {
        clearTimeout(t)
        reject(err instanceof Error ? err : new Error(String(err)))
      },
    )
  })

/**
 * /readyz for every role (issue 9 items 4 and 10): not ready while shutting down; when the store
 * does not answer a read and a one-row write within READY_PROBE_TIMEOUT_MS, or failed a write in
 * the last RECENT_WRITE_ERROR_MS; when no template can serve; or when a role's own check fails.
 */
export async function checkReadiness(parts: ReadinessParts, now = Date.now()): Promise<Readiness> {
  const checks: Record<string, string> = {}
  let ready = true
  const fail = (name: string, why: string) => {
    checks[name] = why
    ready = false
  }
  if (parts.draining?.()) fail('server', 'shutting down')
  if (parts.store) {
    const store = parts.store
    try {
      await within(
        (async () => {
          await store.ping()
          await store.probeWrite(now)
        })(),
        READY_PROBE_TIMEOUT_MS,
        'the store probe',
      )
      const w = store.health().lastWriteError
      if (w && now - w.at < RECENT_WRITE_ERROR_MS)
        fail('store', `failing: a write failed ${Math.round((now - w.at) / 1000)} s ago (${w.reason})`)
      else checks.store = 'ok'
    } catch (err) {
      fail('store', `failing: ${(err as Error).message}`)
    }
  }
  if (parts.templates) {
    for (const t of parts.templates)
      checks[`template:${t.name}`] = t.unavailable ? `unavailable: ${t.unavailable}` : 'ok'
    if (!parts.templates.some((t) => !t.unavailable)) fail('templates', 'no template can serve')
  }
  for (const [name, check] of Object.entries(parts.extra ?? {})) {
    const why = check()
    if (why) fail(name, why)
    else checks[name] = 'ok'
  }
  return { ready, checks, ...(parts.replica ? { replica: parts.replica() } : {}) }
}
