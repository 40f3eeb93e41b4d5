import http from 'node:http'
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { buildRequestHeaders, buildResponseHeaders } from './headers.js'
import type { ForwardContext } from './headers.js'
import type { Closeable } from './http-exchange.js'
import { upstreamStatus, writeRawStatus } from './proxy-errors.js'
import { WsFrameBoundary, wsCloseFrame } from './ws-frames.js'

export interface WsHooks {
  /** Upstream accepted the upgrade. */
  onOpen(): void
  /** A client→upstream data frame began (text, binary or continuation; not ping/pong/close). */
  onClientMessage(): void
  onClose(): void
  onUpstreamError(err: NodeJS.ErrnoException): void
}

/**
 * One proxied WebSocket: the handshake goes upstream through node:http (`'upgrade'` hands over
 * the app's socket), then the two sockets are joined by hand, chunk for chunk, both ways. Each
 * direction has one frame tracker (ws-frames.ts) that reads frame headers in place: on the
 * client→upstream direction it also reports each data frame (activity); on both it knows the
 * frame boundaries, so that on shutdown a close frame goes between two frames, never inside one.
 * Nothing is copied or allocated per chunk; the chunk a socket read is the chunk written.
 */
export class WsTunnel implements Closeable {
  #upstream: Socket | null = null
  #closed = false
  #leaving = false
  #closedUp = false
  #closedDown = false
  readonly #preq: http.ClientRequest
  readonly #toUpstream: WsFrameBoundary
  readonly #toClient = new WsFrameBoundary()

  constructor(
    readonly socket: Duplex,
    readonly head: Buffer,
    readonly ctx: ForwardContext,
    readonly hooks: WsHooks,
    timeoutMs: number,
  ) {
    this.#toUpstream = new WsFrameBoundary(() => hooks.onClientMessage())
    const route = ctx.route
    this.#preq = http.request({
      host: route.hostname!,
      port: route.port,
      method: 'GET',
      path: route.targetBasePath + ctx.path,
      headers: buildRequestHeaders(ctx, true),
      agent: false,
    })
    const preq = this.#preq
    if (timeoutMs)
      preq.setTimeout(timeoutMs, () =>
        preq.destroy(Object.assign(new Error('upstream timed out'), { code: 'ETIMEDOUT' })),
      )
    socket.on('error', this.close)
    socket.on('close', this.close)
    preq.on('error', (err: NodeJS.ErrnoException) => {
      if (this.#closed) return
      if (!this.#upstream) {
        hooks.onUpstreamError(err)
        writeRawStatus(socket, upstreamStatus(err))
      }
      this.close()
    })
    preq.on('response', (pres) => this.#refused(pres))
    preq.on('upgrade', (pres, psock: Socket, phead: Buffer) => this.#open(pres, psock, phead))
    preq.end()
  }

  /** Closes both sockets now. */
  readonly close = (): void => {
    if (this.#closed) return
    this.#closed = true
    this.socket.destroy()
    this.#upstream?.destroy()
    this.#preq.destroy()
    this.hooks.onClose()
  }

  /** Shutting down: a close frame 1001 to each side, at its next frame boundary. */
  goAway(): void {
    if (this.#leaving) return
    this.#leaving = true
    const psock = this.#upstream
    if (!psock) return this.close() // not upgraded yet: nothing to say goodbye to
    if (this.#toClient.atBoundary) this.#closeClient()
    if (this.#toUpstream.atBoundary) this.#closeUpstream()
    // Mid-frame: the frame's rest is still forwarded (below), then the close frame follows it.
    this.socket.resume()
    psock.resume()
    // A peer that never finishes its frame or never answers is cut when the grace is over.
  }

  /** The app refused the upgrade: relay its answer as-is. */
  #refused(pres: IncomingMessage): void {
    const lines = [`HTTP/1.1 ${pres.statusCode} ${pres.statusMessage}`]
    const h = buildResponseHeaders(pres.rawHeaders, this.ctx).headers
    for (let i = 0; i < h.length; i += 2) lines.push(`${h[i]}: ${h[i + 1]}`)
    lines.push('connection: close')
    this.socket.write(lines.join('\r\n') + '\r\n\r\n')
    pres.pipe(this.socket)
  }

  #open(pres: IncomingMessage, psock: Socket, phead: Buffer): void {
    if (this.#closed) {
      psock.destroy()
      return
    }
    const socket = this.socket
    this.#upstream = psock
    this.#preq.setTimeout(0)
    psock.setTimeout(0)
    psock.setNoDelay(true)
    const lines = [`HTTP/1.1 101 ${pres.statusMessage || 'Switching Protocols'}`]
    const raw = pres.rawHeaders
    for (let i = 0; i < raw.length; i += 2) lines.push(`${raw[i]}: ${raw[i + 1]}`)
    socket.write(lines.join('\r\n') + '\r\n\r\n')
    if (phead.length) socket.write(phead)
    psock.on('error', this.close)
    psock.on('close', this.close)
    this.hooks.onOpen()
    if (this.head.length) this.#fromClient(this.head)
    socket.on('data', (chunk: Buffer) => this.#fromClient(chunk))
    psock.on('data', (chunk: Buffer) => this.#fromUpstream(chunk))
    psock.on('drain', () => socket.resume())
    socket.on('drain', () => psock.resume())
    // The server's sockets allow half-open connections: pass a FIN on, then make sure
    // nothing lingers half-closed (a WebSocket's closing handshake is already over by then).
    const linger = () => setTimeout(this.close, 5_000).unref()
    socket.once('end', () => {
      psock.end()
      linger()
    })
    psock.once('end', linger)
  }

  #fromClient(chunk: Buffer): void {
    if (this.#closedUp) return // our close frame went upstream; nothing follows it
    const psock = this.#upstream!
    if (this.#leaving) {
      const n = this.#toUpstream.advance(chunk, true)
      if (n > 0) psock.write(n === chunk.length ? chunk : chunk.subarray(0, n))
      if (this.#toUpstream.atBoundary) this.#closeUpstream()
      return
    }
    this.#toUpstream.advance(chunk, false)
    if (!psock.write(chunk)) this.socket.pause()
  }

  #fromUpstream(chunk: Buffer): void {
    if (this.#closedDown) return
    if (this.#leaving) {
      const n = this.#toClient.advance(chunk, true)
      if (n > 0) this.socket.write(n === chunk.length ? chunk : chunk.subarray(0, n))
      if (this.#toClient.atBoundary) this.#closeClient()
      return
    }
    this.#toClient.advance(chunk, false)
    if (!this.socket.write(chunk)) this.#upstream!.pause()
  }

  #closeUpstream(): void {
    if (this.#closedUp) return
    this.#closedUp = true
    this.#upstream!.end(wsCloseFrame(1001, true))
  }

  #closeClient(): void {
    if (this.#closedDown) return
    this.#closedDown = true
    this.socket.end(wsCloseFrame(1001, false))
  }
}
