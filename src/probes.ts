import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Registry } from 'prom-client'
import type { Readiness } from './api/readiness.js'

/**
 * `/healthz`, `/readyz` and `/metrics` for the roles that have no API of their own (issue 9 item
 * 10): `serve --role gateway` answered 404 on them and `--role worker` listened nowhere. Same
 * answers as the API's: `{"status":"ok"}`; `{"status":"ready"|"not ready","checks":{…}}` with 200 or
 * 503; Prometheus text for an admin or proxy key.
 */
export interface ProbeOptions {
  readonly readiness: () => Promise<Readiness>
  readonly metrics: Registry
  /** Whether this bearer key may read /metrics (an admin or proxy key). */
  readonly mayReadMetrics: (key: string | undefined) => Promise<boolean> | boolean
}

/** Returns a handler that answers the three probe paths and returns true, or returns false for any other request. */
export function createProbeHandler(opts: ProbeOptions): (req: IncomingMessage, res: ServerResponse) => boolean {
  const json = (res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...extra })
    res.end(JSON.stringify(body))
  }
  const fail = (res: ServerResponse, err: unknown) => {
    if (!res.headersSent) json(res, 503, { error: { code: 'PROVIDER_UNAVAILABLE', message: (err as Error).message } })
    else res.destroy()
  }
  return (req, res) => {
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const path = q < 0 ? url : url.slice(0, q)
    if (path !== '/healthz' && path !== '/readyz' && path !== '/metrics') return false
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      json(res, 405, { error: { code: 'INVALID_REQUEST', message: 'use GET' } }, { allow: 'GET, HEAD' })
      return true
    }
    if (path === '/healthz') json(res, 200, { status: 'ok' })
    else if (path === '/readyz') {
      opts.readiness().then(
        (r) =>
          json(res, r.ready ? 200 : 503, {
            status: r.ready ? 'ready' : 'not ready',
            checks: r.checks,
            ...(r.replica ? { replica: r.replica } : {}),
          }),
        (err: unknown) => fail(res, err),
      )
    } else {
      const key = bearer(req)
      Promise.resolve(opts.mayReadMetrics(key))
        .then(async (ok) => {
          if (!ok) {
            if (key === undefined)
              json(
                res,
                401,
                { error: { code: 'UNAUTHORIZED', message: 'missing or invalid API key' } },
                { 'www-authenticate': 'Bearer' },
              )
            else json(res, 403, { error: { code: 'FORBIDDEN', message: 'metrics need an admin or proxy key' } })
            return
          }
          const text = await opts.metrics.metrics()
          res.writeHead(200, { 'content-type': opts.metrics.contentType, 'cache-control': 'no-store' })
          res.end(text)
        })
        .catch((err: unknown) => fail(res, err))
    }
    return true
  }
}

function bearer(req: IncomingMessage): string | undefined {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')
  if (m) return m[1]
  const x = req.headers['x-api-key']
  return typeof x === 'string' && x ? x : undefined
}

/** A constant-time check of a key against a list of known secrets (the gateway role has no store of keys). */
export function matchesAny(secrets: readonly string[]): (key: string | undefined) => boolean {
  const digests = secrets.map((s) => createHash('sha256').update(s).digest())
  return (key) => {
    if (key === undefined) return false
    const d = createHash('sha256').update(key).digest()
    let found = false
    for (const s of digests) if (timingSafeEqual(s, d)) found = true
    return found
  }
}
