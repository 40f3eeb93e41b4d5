import { Agent, request } from 'undici'

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
 * Each probe uses its own short-lived Agent (one connection, closed afterwards) and never the
 * global dispatcher, so probing cannot disturb the gateway's pools and a listener that stopped
 * accepting is noticed instead of hidden behind a kept-alive socket. Never throws.
 */
export async function probeHttp(
  address: string,
  path: string,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<ProbeResult> {
  const url = address.replace(/\/+$/, '') + (path.startsWith('/') ? path : `/${path}`)
  const agent = new Agent({
    connections: 1,
    pipelining: 0,
    connect: { timeout: opts.timeoutMs },
    headersTimeout: opts.timeoutMs,
    bodyTimeout: opts.timeoutMs,
  })
  const timeout = AbortSignal.timeout(opts.timeoutMs)
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout
  try {
    const res = await request(url, {
      method: 'GET',
      dispatcher: agent,
      signal,
      headers: { 'user-agent': 'studiopool-probe', accept: '*/*', connection: 'close' },
    })
    // The body is not needed; drop it without reading an unbounded stream.
    res.body.on('error', () => {})
    res.body.destroy()
    return res.statusCode < 500
      ? { ok: true, status: res.statusCode }
      : { ok: false, status: res.statusCode, error: `HTTP ${res.statusCode}` }
  } catch (err) {
    return { ok: false, error: describeError(err, timeout.aborted) }
  } finally {
    agent.destroy().catch(() => {})
  }
}

function describeError(err: unknown, timedOut: boolean): string {
  if (timedOut) return 'timeout'
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code ?? (err.cause as { code?: unknown } | undefined)?.code
    return typeof code === 'string' ? code : err.message
  }
  return String(err)
}
