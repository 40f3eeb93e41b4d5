/**
 * An Engine API proxy on its own Unix socket in front of a test dockerd, which can hold chosen
 * requests until the test lets them go: how the tests see, without timing, how many container
 * creates a provider has under way at once.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { rmSync } from 'node:fs'
import { Agent, request } from 'undici'

const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer'])

export interface DockerProxy {
  readonly url: string
  /** Requests held right now. */
  readonly held: number
  /** Hold every request for which `match` is true from now on (until `passAll`). */
  holdWhere(match: (method: string, path: string) => boolean): void
  /**
   * Answers every request for which `match` is true with `respond` instead of the daemon (a
   * scripted image pull: no registry can be reached here). `null` stops it.
   */
  respondWhere(match: ((method: string, path: string) => boolean) | null, respond?: (res: ServerResponse) => void): void
  /** Stops holding and lets every held request through. */
  passAll(): void
  /** Stops holding and answers every held request 503 without passing it on (the daemon never sees it). */
  dropAll(): void
  close(): Promise<void>
}

export async function startDockerProxy(targetSocket: string, socket: string): Promise<DockerProxy> {
  const agent = new Agent({ connect: { socketPath: targetSocket } })
  let match: ((method: string, path: string) => boolean) | null = null
  const held: ((forward: boolean) => void)[] = []
  let scripted: { match: (method: string, path: string) => boolean; respond: (res: ServerResponse) => void } | null =
    null

  async function forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '/'
    if (scripted && scripted.match(req.method ?? 'GET', path.replace(/^\/v[\d.]+/, ''))) {
      req.resume()
      return scripted.respond(res)
    }
    if (match && match(req.method ?? 'GET', path.replace(/^\/v[\d.]+/, ''))) {
      const forward = await new Promise<boolean>((r) => held.push(r))
      if (!forward) {
        res.writeHead(503)
        res.end('dropped by the test proxy')
        return
      }
    }
    const headers: Record<string, string> = {}
    for (const [k, v] of Object.entries(req.headers)) if (!HOP.has(k) && typeof v === 'string') headers[k] = v
    const hasBody = req.method === 'POST' || req.method === 'PUT'
    const up = await request(`http://docker${path}`, {
      method: (req.method ?? 'GET') as 'GET',
      headers,
      body: hasBody ? req : undefined,
      dispatcher: agent,
    })
    const out: Record<string, string | string[]> = {}
    for (const [k, v] of Object.entries(up.headers)) if (!HOP.has(k) && v !== undefined) out[k] = v
    res.writeHead(up.statusCode, out)
    for await (const chunk of up.body) res.write(chunk)
    res.end()
  }

  const server: Server = createServer((req, res) => {
    forward(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(502)
      res.end(String((err as Error).message))
    })
  })
  rmSync(socket, { force: true })
  await new Promise<void>((r) => server.listen(socket, r))
  const passAll = (): void => {
    match = null
    for (const r of held.splice(0)) r(true)
  }
  const dropAll = (): void => {
    match = null
    for (const r of held.splice(0)) r(false)
  }
  return {
    url: `unix://${socket}`,
    get held() {
      return held.length
    },
    holdWhere(m) {
      match = m
    },
    respondWhere(m, respond) {
      scripted = m && respond ? { match: m, respond } : null
    },
    passAll,
    dropAll,
    async close() {
      passAll()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
      await agent.close()
      rmSync(socket, { force: true })
    },
  }
}
