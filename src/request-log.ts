import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'

/** `server.accessLog`: the level access-log lines are written at, or `off`. */
export type AccessLogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'off'

/** A client's X-Request-Id is kept when it is short and plain; otherwise one is generated. */
const SANE_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/

/** Query parameters whose values are credentials (launch tokens, OIDC codes): never logged. */
const SECRET_PARAM = /token|key|secret|code|state|password|sig/i

/**
 * One access-log line per HTTP request and WebSocket upgrade (issue 17), for the API, the dashboard
 * and the gateway alike, with a request id: the client's `X-Request-Id` when sane, else a new UUID. The
 * id is returned in the response's `X-Request-Id`, passed on to Fastify (its own log lines carry it
 * as `reqId`) and to the session upstream. Paths are logged with credential-like query values redacted.
 */
export class RequestLog {
  readonly #log: Logger | undefined
  readonly #level: Exclude<AccessLogLevel, 'off'>

  constructor(log: Logger, level: AccessLogLevel) {
    this.#log = level === 'off' ? undefined : log.child({ component: 'access' })
    this.#level = level === 'off' ? 'info' : level
  }

  /** Gives the request its id (also set on the response) and logs it once the response is done. */
  request(req: IncomingMessage, res: ServerResponse): string {
    const id = requestId(req)
    res.setHeader('x-request-id', id)
    const log = this.#log
    if (log?.isLevelEnabled(this.#level)) {
      const started = process.hrtime.bigint()
      // Read now: once the response is done the request may have lost its socket (req.socket is null).
      const remote = req.socket?.remoteAddress
      res.once('close', () => {
        log[this.#level](
          {
            reqId: id,
            method: req.method,
            path: safePath(req.url ?? '/'),
            status: res.writableFinished ? res.statusCode : res.headersSent ? res.statusCode : 499,
            ms: Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100,
            remote,
          },
          'request',
        )
      })
    }
    return id
  }

  /** A WebSocket upgrade: logged when its connection ends (how long it was open). */
  upgrade(req: IncomingMessage, socket: Duplex): string {
    const id = requestId(req)
    const log = this.#log
    if (log?.isLevelEnabled(this.#level)) {
      const started = Date.now()
      const remote = req.socket?.remoteAddress
      socket.once('close', () =>
        log[this.#level](
          {
            reqId: id,
            method: req.method,
            path: safePath(req.url ?? '/'),
            upgrade: 'websocket',
            openSeconds: Math.round((Date.now() - started) / 100) / 10,
            remote,
          },
          'websocket',
        ),
      )
    }
    return id
  }
}

function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  const id = typeof given === 'string' && SANE_ID.test(given) ? given : randomUUID()
  req.headers['x-request-id'] = id
  return id
}

/** The path with the values of credential-like query parameters replaced. */
export function safePath(url: string): string {
  const q = url.indexOf('?')
  if (q < 0) return url
  const params = new URLSearchParams(url.slice(q + 1))
  for (const k of [...params.keys()]) if (SECRET_PARAM.test(k)) params.set(k, 'redacted')
  return `${url.slice(0, q)}?${params.toString()}`
}
