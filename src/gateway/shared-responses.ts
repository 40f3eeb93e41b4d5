import type { IncomingMessage, ServerResponse } from 'node:http'
import type { SharedTemplateRoute } from '../domain/routes.js'
import type { SharedRefusal } from '../domain/shared.js'
import type { HttpExchange } from './http-exchange.js'
import { badGatewayPage, refusedPage, sharedStartingPage } from './pages.js'
import { sendJsonError, sendPage, wantsHtml } from './responses.js'
import type { CompiledRoute } from './route-table.js'
import type { SharedMetrics } from './shared-metrics.js'

/** The progress page of a shared app with no instance that has room (yet). */
export function startingPage(t: SharedTemplateRoute, routes: Iterable<CompiledRoute>) {
  let starting = 0
  for (const r of routes) if (r.entry.state !== 'ready' && !r.entry.shared?.draining) starting++
  return sharedStartingPage(t.displayName, starting)
}

/** The pool refused a visitor (shared-gate.ts): the page for browsers, the JSON error for others, Retry-After when known. */
export function sendRefusal(req: IncomingMessage, res: ServerResponse, r: SharedRefusal, dashboardUrl: string): void {
  if (r.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(r.retryAfterSeconds))
  if (wantsHtml(req)) sendPage(res, refusedPage(r.status, r.message, dashboardUrl))
  else sendJsonError(res, r.status, r.code, r.message)
  req.resume()
}

/** Every instance of a per-request template is at its cap and the queue is full, or the wait timed out: 503 with Retry-After. */
export function sendBusy(req: IncomingMessage, res: ServerResponse, t: SharedTemplateRoute, why: 'full' | 'timeout') {
  if (res.headersSent) return void res.destroy()
  const message =
    why === 'full'
      ? `every instance of "${t.name}" is busy and ${t.queueSize} requests are already waiting; try again shortly`
      : `every instance of "${t.name}" stayed busy for ${Math.round(t.queueTimeoutMs / 1000)}s; try again shortly`
  res.setHeader('retry-after', '2')
  sendJsonError(res, 503, 'POOL_FULL', message)
  req.resume()
}

/**
 * The instance failed before it answered. `again` (another instance) for an idempotent request
 * that was not retried yet: counted, and the caller forwards it there. Otherwise a clear error:
 * JSON 502 `UPSTREAM_FAILED` for per-request APIs (a POST may have been applied: never retried), the
 * 502 page for browsers.
 */
export function retryOrFail(
  x: HttpExchange,
  again: CompiledRoute | undefined,
  routing: SharedTemplateRoute['routing'],
  method: string,
  metrics: SharedMetrics,
  template: string,
  dashboardUrl: string,
): void {
  if (again) return metrics.retry(template, 'retried')
  metrics.retry(template, 'failed')
  if (routing === 'per-request' || !wantsHtml(x.req)) {
    const idem =
      method === 'GET' || method === 'HEAD' || method === 'OPTIONS' || method === 'PUT' || method === 'DELETE'
    sendJsonError(
      x.res,
      502,
      'UPSTREAM_FAILED',
      idem
        ? `the instance of "${template}" serving this request failed before answering, and so did the retry (or no other instance was free)`
        : `the instance of "${template}" serving this ${method} failed before answering; it was not retried because ${method} is not idempotent (it may have been applied)`,
    )
    return
  }
  sendPage(x.res, badGatewayPage(502, dashboardUrl))
}
