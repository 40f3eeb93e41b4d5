import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { answerOutside, type BasePathVerdict, refuseUpgrade, stripBasePath } from './gateway/base-path.js'
import type { Gateway } from './gateway/gateway.js'
import type { RequestLog } from './request-log.js'
import { ServerLifecycle } from './server-lifecycle.js'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

/**
 * The one HTTP listener of a process (every role has one; the worker's serves its probes only).
 * The gateway sees every request first and hands the rest to Fastify; what answers is set as the
 * parts come up (`gateway`, `fastify` and `appReady`, `workerProbes`): until then, 503 "starting up".
 */
export class Listener {
  readonly server: Server = createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 72_000 })
  readonly lifecycle = new ServerLifecycle()
  gateway: Gateway | undefined
  /** Fastify's handler exists from construction, but routes work only after ready(): `appReady`. */
  fastify: Handler | undefined
  appReady = false
  /** The worker role's /healthz, /readyz and /metrics; set once the store and pool exist. */
  workerProbes: ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined
  /** The access log and request ids (request-log.ts); set by the composition root. */
  requestLog: RequestLog | undefined

  /**
   * `basePath`: `Config['server']['basePath']` (`/studiopool`, or ''): requests must arrive with it (the
   * proxy passes the path through, like JupyterHub's base_url); stripped here (gateway/base-path.ts).
   */
  constructor(
    readonly role: 'all' | 'api' | 'worker',
    readonly basePath = '',
  ) {
    this.lifecycle.attach(this.server)
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#request(req, res))
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.requestLog?.upgrade(req, socket)
      if (this.#prefix(req) !== 'in') refuseUpgrade(socket)
      else if (this.gateway) this.gateway.handleUpgrade(req, socket, head)
      else socket.destroy()
    })
  }

  /** `stripBasePath` for this listener (the worker's probe port has no prefix). */
  #prefix(req: IncomingMessage): BasePathVerdict {
    if (this.role === 'worker') return 'in'
    return stripBasePath(req, this.basePath, (host) => this.gateway?.isSessionHost(host) ?? false)
  }

  #request(req: IncomingMessage, res: ServerResponse): void {
    this.requestLog?.request(req, res)
    const where = this.#prefix(req)
    if (where !== 'in') answerOutside(req, res, this.basePath, where)
    else if (this.role === 'worker') {
      if (this.workerProbes?.(req, res)) return
      res.writeHead(this.workerProbes ? 404 : 503, { 'content-type': 'application/json' })
      res.end(
        this.workerProbes
          ? '{"error":{"code":"NOT_FOUND","message":"the worker role serves /healthz, /readyz and /metrics only"}}'
          : '{"error":{"code":"PROVIDER_UNAVAILABLE","message":"starting up"}}',
      )
    } else if (this.gateway) this.gateway.handleRequest(req, res)
    else if (this.fastify && this.appReady) this.fastify(req, res)
    else {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' })
      res.end('{"error":{"code":"PROVIDER_UNAVAILABLE","message":"starting up"}}')
    }
  }

  /** Listens; resolves with the bound address. */
  async listen(port: number, host: string): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
    return this.server.address() as AddressInfo
  }

  /** Cuts every connection and stops listening. */
  close(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.server.closeAllConnections()
      this.server.close(() => resolve())
    })
  }
}

/** `http://host:port` of a bound address (IPv6 in brackets). */
export function addressUrl(address: AddressInfo): string {
  return `http://${address.address.includes(':') ? `[${address.address}]` : address.address}:${address.port}`
}
