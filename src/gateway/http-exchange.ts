import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Writable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { buildResponseHeaders } from './headers.js'
import type { ForwardContext } from './headers.js'
import { upstreamError } from './proxy-errors.js'

/** One proxied HTTP exchange as the gateway's hooks see it. */
export interface HttpExchange extends Closeable {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly ctx: ForwardContext
  /** `performance.now()` when forwarding began. */
  readonly started: number
  /** The exchange is over (`onDone` was called). */
  readonly done: boolean
}

/**
 * What the gateway wants to hear about an exchange. One object for all exchanges (no
 * per-request closures): each call names the exchange.
 */
export interface ForwardHooks {
  /** Upstream answered with this status (headers are on their way to the client). */
  onResponse(x: HttpExchange, status: number): void
  /** The exchange is over: `status` is what the client got (0 when the client went away first). Called once. */
  onDone(x: HttpExchange, status: number): void
  /** Upstream failed before it answered; the hook sends the error page. */
  onUpstreamError(x: HttpExchange, err: NodeJS.ErrnoException): void
}

/** Something the gateway can close when the route goes away. */
export interface Closeable {
  close(): void
  /**
   * The server is shutting down (issue 9 item 9): a WebSocket sends close frames with 1001 (going
   * away) to both ends, at frame boundaries; a proxied event stream ends cleanly. Other exchanges
   * are left to finish within the shutdown grace.
   */
  goAway?(): void
}

/**
 * One proxied HTTP exchange over undici's dispatcher (its raw handler interface: no request or
 * response objects, no streams, no per-request closures but the client's close listener).
 * Upstream chunks go to `res.write`; backpressure pauses undici's parser until `drain`.
 */
export class Exchange implements HttpExchange {
  readonly started = performance.now()
  status = 0
  done = false
  retried = false
  aborted = false
  abort: ((err?: Error) => void) | null = null
  resume: (() => void) | null = null
  eventStream = false
  /** Where the body goes when the context's rewrite takes it (it writes to and ends `res`); else `res` itself. */
  body: Writable | null = null

  constructor(
    readonly dispatcher: Dispatcher,
    readonly options: Dispatcher.DispatchOptions,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly ctx: ForwardContext,
    readonly hooks: ForwardHooks,
    readonly bodiless: boolean,
  ) {}

  start(): void {
    this.dispatcher.dispatch(this.options, this)
  }

  finish(status: number): void {
    if (this.done) return
    this.done = true
    this.hooks.onDone(this, status)
  }

  /** The client went away (or the response ended): stop the upstream side too. */
  clientClosed(): void {
    if (this.res.writableFinished) return
    this.finish(0)
    this.stopUpstream()
  }

  stopUpstream(): void {
    this.aborted = true
    this.abort?.()
    this.body?.destroy()
  }

  close(): void {
    this.finish(0)
    this.stopUpstream()
    this.res.destroy()
  }

  goAway(): void {
    // An event stream never ends by itself; end ours at a chunk boundary (events are whole writes) and stop upstream.
    if (!this.eventStream || this.done) return
    this.finish(this.status)
    this.res.end()
    this.stopUpstream()
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort
    if (this.aborted) abort()
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void, statusText: string): boolean {
    if (status < 200) return true // 1xx informational: node's server answered `100-continue` itself
    this.status = status
    this.resume = resume
    this.hooks.onResponse(this, status)
    const out = buildResponseHeaders(raw, this.ctx)
    let headers = out.headers
    if (this.ctx.rewrite) {
      const r = this.ctx.rewrite.begin(status, headers, this.res)
      headers = r.headers
      this.body = r.body
    }
    this.res.writeHead(status, statusText, headers)
    // Server-sent events: send the head now, not with the first event.
    if (out.eventStream) {
      this.eventStream = true
      this.res.flushHeaders()
    }
    return true
  }

  onData(chunk: Buffer): boolean {
    const sink = this.body ?? this.res
    if (sink.write(chunk)) return true
    sink.once('drain', this.resume!)
    return false
  }

  onComplete(): void {
    if (this.body) this.body.end()
    else this.res.end()
    this.finish(this.status)
  }

  onError(err: Error): void {
    if (this.done) return
    const e = upstreamError(err)
    const method = this.options.method
    // A kept-alive connection the app had just closed: safe to try once more for a request without a body.
    if (
      !this.retried &&
      this.bodiless &&
      e.code === 'ECONNRESET' &&
      !this.res.headersSent &&
      (method === 'GET' || method === 'HEAD')
    ) {
      this.retried = true
      this.abort = null
      this.start()
      return
    }
    if (this.res.headersSent || this.res.destroyed) {
      this.res.destroy()
      this.finish(0)
      return
    }
    // Let the client's request body go (it may still be arriving), so the connection stays usable.
    if (!this.bodiless && !this.req.readableEnded) this.req.resume()
    this.hooks.onUpstreamError(this, e)
    this.finish(this.res.statusCode)
  }
}
