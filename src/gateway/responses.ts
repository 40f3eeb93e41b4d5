import type { IncomingMessage, ServerResponse } from 'node:http'
import type { RouteEntry } from '../domain/routes.js'
import { endedPage, loginPage, pausedPage, progressPage } from './pages.js'
import type { Page } from './pages.js'

/** The gateway's own answers: its HTML pages and its JSON errors (`{ error: { code, message } }`). */

export function sendPage(res: ServerResponse, page: Page): void {
  res.writeHead(page.status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'content-length': Buffer.byteLength(page.html),
    ...page.headers,
  })
  res.end(page.html)
}

export function sendJsonError(res: ServerResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } })
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
  })
  res.end(body)
}

export function wantsHtml(req: IncomingMessage): boolean {
  const a = req.headers.accept
  return typeof a === 'string' && a.includes('text/html')
}

/** No valid cookie: the login page for a browser (back to `next` after), a 401 JSON error for others. */
export function sendUnauthorized(
  req: IncomingMessage,
  res: ServerResponse,
  loginUrl: (next: string) => string,
  next: string,
  message?: string,
): void {
  if (wantsHtml(req)) return sendPage(res, loginPage(loginUrl(next), message))
  sendJsonError(res, 401, 'UNAUTHORIZED', message ?? 'a session cookie is needed; open the launch link or sign in')
}

/** The page for a route that is not (yet, or any more) ready to forward to. */
export function stateRoutePage(e: RouteEntry, dashboardUrl: string): Page {
  switch (e.state) {
    case 'queued':
    case 'provisioning':
    case 'starting':
      return progressPage(e)
    case 'ready': // ready without an address: about to be known
      return progressPage({ ...e, progress: Math.max(e.progress, 99) })
    case 'stopping':
    case 'suspended':
      return pausedPage(dashboardUrl, e.state)
    default:
      return endedPage(dashboardUrl, e.failureReason)
  }
}
