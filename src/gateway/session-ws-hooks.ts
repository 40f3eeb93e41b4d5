import type { IncomingMessage } from 'node:http'
import type { ActivityBatcher } from './activity.js'
import type { ConnectionTracker } from './connections.js'
import type { Closeable, WsHooks } from './forward.js'
import type { GatewayMetrics } from './metrics.js'

/**
 * One proxied session WebSocket as the gateway sees it: every client data frame is activity (one
 * map write in the batcher, no I/O), the open connection is tracked under its instance.
 */
export class SessionWsHooks implements WsHooks {
  #opened = false
  #closed = false
  #handle: Closeable | null = null

  constructor(
    readonly id: string,
    readonly template: string,
    readonly req: IncomingMessage,
    readonly activity: ActivityBatcher,
    readonly metrics: GatewayMetrics,
    readonly open: ConnectionTracker,
    readonly failed: (err: NodeJS.ErrnoException, id: string, template: string, req: IncomingMessage) => void,
  ) {}

  /** The forwarder's handle: tracked unless it closed already. */
  opened(handle: Closeable): void {
    this.#handle = handle
    if (!this.#closed) this.open.track(this.id, handle)
  }

  onOpen(): void {
    this.#opened = true
    this.metrics.wsOpened(this.template)
    this.activity.touch(this.id)
  }

  onClientMessage(): void {
    this.activity.touch(this.id)
  }

  onClose(): void {
    this.#closed = true
    if (this.#handle) this.open.untrack(this.id, this.#handle)
    if (this.#opened) this.metrics.wsClosed(this.template)
  }

  onUpstreamError(err: NodeJS.ErrnoException): void {
    this.failed(err, this.id, this.template, this.req)
  }
}
