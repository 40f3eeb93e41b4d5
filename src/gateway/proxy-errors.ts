import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'

/**
 * What the gateway says and logs when the way to an app fails: undici's error codes mapped to
 * the CHP-style errno codes pages, logs and metrics use; the raw status line a failed WebSocket
 * handshake gets; and the log line of an upstream failure (never the query, which may hold a
 * launch token).
 */

/** undici's error codes as the gateway's (CHP-style) errno codes. */
export function upstreamError(err: Error): NodeJS.ErrnoException {
  const e = err as NodeJS.ErrnoException
  switch (e.code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return Object.assign(new Error('upstream timed out'), { code: 'ETIMEDOUT' })
    case 'UND_ERR_SOCKET':
      return Object.assign(new Error('upstream closed the connection'), { code: 'ECONNRESET' })
    default:
      return e
  }
}

/** The status a client gets for an upstream failure: 504 for a timeout, 502 otherwise. */
export function upstreamStatus(err: NodeJS.ErrnoException): 502 | 504 {
  return err.code === 'ETIMEDOUT' ? 504 : 502
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
}

/** architecture.md conventions: a WebSocket failure is a raw status line written to the socket. */
export function writeRawStatus(socket: Duplex, status: number): void {
  if (!socket.writable) {
    socket.destroy()
    return
  }
  socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
}

/** CHP's list: the app is down or restarting; a stack trace says nothing more. */
const EXPECTED = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ETIMEDOUT', 'ENOTFOUND', 'EPIPE'])

/** Logs an upstream failure (a warning when the app is merely down) and returns its code for the metrics. */
export function logUpstreamFailure(
  log: Logger,
  err: NodeJS.ErrnoException,
  instanceId: string,
  url: string | undefined,
): string {
  const code = err.code ?? 'UNKNOWN'
  const path = redact(url)
  if (EXPECTED.has(code)) log.warn({ instanceId, code, path }, 'upstream did not answer')
  else log.error({ instanceId, err, path }, 'upstream request failed')
  return code
}

/** A URL for logs: path only; the query (which may hold a launch token) is never logged. */
export function redact(url: string | undefined): string {
  if (!url) return '/'
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q) + '?[redacted]'
}

/** An error as a log field: message and code only. */
export function errSummary(err: unknown): { message: string; code?: string } {
  if (err instanceof Error) return { message: err.message, code: (err as NodeJS.ErrnoException).code }
  return { message: String(err) }
}
