import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'

export interface ProbeResult {
  readonly ok: boolean
  readonly status?: number
  readonly error?: string
}

/**
 * Readiness probe: "does the app answer HTTP?" (architecture.md conventions: readiness is a separate probe, not
 * part of `create`). Any status below 500 counts as up, because apps often answer their root
 * with a redirect, 401 or 404; connection errors, timeouts and 5xx do not.
 *
 * Each probe uses its own connection (no agent, `connection: close`) and never a shared pool, so
 * probing cannot disturb the gateway's pools and a listener that stopped accepting is noticed
 * instead of hidden behind a kept-alive socket. Plain node:http rather than a per-probe undici
 * Agent: the Agent's set-up and teardown (and the abort errors it built for the dropped body) were
 * a third of the CPU a top-up cost the server (bench:api at minFree). Never throws.
 */
export function probeHttp(
  address: string,
  path: string,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<ProbeResult> {
  const url = address.replace(/\/+$/, '') + (path.startsWith('/') ? path : `/${path}`)
  return new Promise<ProbeResult>((resolve) => {
    let req: ClientRequest | undefined
    let done = false
    const finish = (r: ProbeResult) => {
      if (done) return
      done = true
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
      // The body is not needed; drop it (and the connection) without reading an unbounded stream.
      req?.destroy()
      resolve(r)
    }
    const onAbort = () => finish({ ok: false, error: 'aborted' })
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), opts.timeoutMs)
    if (opts.signal?.aborted) return onAbort()
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const send = url.startsWith('https:') ? httpsRequest : httpRequest
      req = send(url, {
        method: 'GET',
        agent: false,
        headers: { 'user-agent': 'studiopool-probe', accept: '*/*', connection: 'close' },
      })
    } catch (err) {
      return finish({ ok: false, error: describeError(err) })
    }
    req.on('response', (res: IncomingMessage) => {
      const status = res.statusCode ?? 0
      res.on('error', () => {})
      finish(status < 500 ? { ok: true, status } : { ok: false, status, error: `HTTP ${status}` })
    })
    // After finish, destroying the request emits an error that is no longer news.
    req.on('error', (err) => finish({ ok: false, error: describeError(err) }))
    req.end()
  })
}

function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code ?? (err.cause as { code?: unknown } | undefined)?.code
    return typeof code === 'string' ? code : err.message
  }
  return String(err)
}
