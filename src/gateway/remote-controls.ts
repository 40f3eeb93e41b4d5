import { AppError, ERROR_CODES, type ErrorCode } from '../domain/errors.js'
import type { SessionControls, SessionStopStatus } from '../domain/pending-stop.js'
import { type RemoteOptions, under } from './remote.js'

/**
 * The warning banner's SessionControls in split mode (`serve --role gateway`, docs/widget.md): the
 * API's `/api/v1/gateway/sessions/…` routes (api/routes/gateway-feed.ts) with the proxy key. The
 * API's error codes come back as AppErrors (a suspend the provider cannot do stays `409 CONFLICT`);
 * an unreachable API is an Error (the banner says the gateway did not answer).
 */
export function createRemoteSessionControls(opts: RemoteOptions): SessionControls {
  const base = (id: string) => `/api/v1/gateway/sessions/${encodeURIComponent(id)}`
  return {
    status: (id) => call<SessionStopStatus>(opts, 'GET', `${base(id)}/stop-status`),
    keepWorking: (id, userId) => call<SessionStopStatus>(opts, 'POST', `${base(id)}/keep`, { userId }),
    async stop(id, userId) {
      await call(opts, 'POST', `${base(id)}/stop`, { userId })
    },
    async suspend(id, userId) {
      await call(opts, 'POST', `${base(id)}/suspend`, { userId })
    },
  }
}

/** One JSON call; undefined for 404 (the session has ended). */
async function call<T>(
  opts: RemoteOptions,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<T | undefined> {
  const res = await fetch(under(opts.serviceUrl, path), {
    method,
    headers: {
      authorization: `Bearer ${opts.key}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5_000),
  })
  const text = await res.text()
  if (res.status === 404) return undefined
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  if (res.ok) return json as T
  const err = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error
  if (typeof err?.code === 'string' && err.code in ERROR_CODES)
    throw new AppError(err.code as ErrorCode, typeof err.message === 'string' ? err.message : err.code)
  throw new Error(`${path} answered ${res.status}`)
}
