import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'

/**
 * Slow clients and shutdown (issue 9 item 9). SIGTERM used to exit within a second and cut
 * everything: SSE streams mid-way, uploads reset, every proxied WebSocket closed with 1006 and no
 * close frame, so every rolling restart broke every user's Jupyter channel and Shiny socket.
 *
 * `drain()`: flip /readyz to 503 (`draining()`), abort `shuttingDown` (our own SSE streams end
 * cleanly on it), stop accepting connections, ask the gateway to go away (WebSocket close frames
 * 1001 both ways, proxied event streams ended), then wait for in-flight requests and WebSockets to
 * finish, at most `graceMs`. What is left after that is cut by the caller's close().
 */
export class ServerLifecycle {
  readonly #abort = new AbortController()
  readonly #requests = new Set<ServerResponse>()
  readonly #sockets = new Set<Duplex>()
  #idleWaiters: (() => void)[] = []

  get shuttingDown(): AbortSignal {
    return this.#abort.signal
  }

  draining(): boolean {
    return this.#abort.signal.aborted
  }

  /** Tracks the server's requests and upgraded sockets. Call before the server's other listeners run. */
  attach(server: Server): void {
    server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => {
      this.#requests.add(res)
      res.once('close', () => this.#done(this.#requests, res))
    })
    server.prependListener('upgrade', (_req: IncomingMessage, socket: Duplex) => {
      this.#sockets.add(socket)
      socket.once('close', () => this.#done(this.#sockets, socket))
    })
  }

  /** In-flight requests and open upgraded sockets. */
  get inFlight(): number {
    return this.#requests.size + this.#sockets.size
  }

  #done<T>(set: Set<T>, item: T): void {
    set.delete(item)
    if (this.inFlight === 0) for (const w of this.#idleWaiters.splice(0)) w()
  }

  async drain(servers: readonly Server[], graceMs: number, goAway: () => void): Promise<void> {
    if (this.draining()) return
    this.#abort.abort()
    // No new connections; idle keep-alive connections are closed now (Node ≥ 19), busy ones after their response.
    for (const s of servers) s.close()
    goAway()
    if (this.inFlight === 0) return
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, graceMs)
      t.unref()
      this.#idleWaiters.push(() => {
        clearTimeout(t)
        resolve()
      })
    })
  }
}

/**
 * A request to the API or dashboard must send its whole body within `ms` (issue 9 item 9: a client
 * that announced a large content-length and then sent a byte every few seconds held a connection
 * for ever; the header and idle timeouts do not cover a body in progress). Answers 408 and closes
 * the connection. Session traffic never goes through here: uploads to an app may take long.
 */
export function armBodyTimeout(req: IncomingMessage, res: ServerResponse, ms: number): void {
  if (ms <= 0) return
  const len = req.headers['content-length']
  if ((len === undefined || len === '0') && req.headers['transfer-encoding'] === undefined) return
  const timer = setTimeout(() => {
    if (req.complete) return
    if (!res.headersSent) {
      res.writeHead(408, { 'content-type': 'application/json; charset=utf-8', connection: 'close' })
      res.end(
        JSON.stringify({
          error: {
            code: 'REQUEST_TIMEOUT',
            message: `the request body did not arrive within ${Math.round(ms / 1000)} s`,
          },
        }),
        () => req.socket.destroy(),
      )
    } else req.socket.destroy()
  }, ms)
  timer.unref()
  const clear = () => clearTimeout(timer)
  req.once('end', clear)
  req.once('close', clear)
  res.once('close', clear)
}
