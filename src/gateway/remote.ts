import { randomUUID } from 'node:crypto'
import http from 'node:http'
import https from 'node:https'
import type { Logger } from 'pino'
import type { ActivitySink, NonceLedger, RouteEvent, RouteSource } from '../domain/routes.js'
import { RouteHub } from './route-hub.js'
import type { SharedLoadSink } from '../domain/shared.js'

/**
 * Split mode (`serve --role gateway`): routes, activity and launch-token nonces come from and go
 * to the API at `serviceUrl`, authenticated with the proxy key (like the seed's PROXY_KEY).
 */
export interface RemoteOptions {
  readonly serviceUrl: string
  readonly key: string
  readonly log: Logger
}

export interface RemoteRouteSource extends RouteSource {
  /** Resolves after the first full table arrived (or rejects after `timeoutMs`). */
  ready(timeoutMs?: number): Promise<void>
  /** True while the stream is connected. */
  readonly connected: boolean
  close(): void
}

/**
 * An SSE client of `GET /api/v1/gateway/routes`. The table lives in a local RouteHub, so
 * existing routes keep working while the API is away; on every (re)connect the API sends a
 * `reset` and the table is replaced in full. Reconnects back off from 250 ms to 5 s. A stream
 * that is silent for `staleMs` (no event, no heartbeat) is treated as dead and reopened.
 */
// eslint-disable-next-line max-lines-per-function -- one reconnecting stream: its state (backoff, stale timer, abort) is shared by small inner steps, read in order
export function createRemoteRouteSource(
  opts: RemoteOptions & { staleMs?: number; maxBackoffMs?: number },
): RemoteRouteSource {
  const hub = new RouteHub()
  const url = under(opts.serviceUrl, '/api/v1/gateway/routes')
  const lib = url.protocol === 'https:' ? https : http
  const staleMs = opts.staleMs ?? 45_000
  const maxBackoff = opts.maxBackoffMs ?? 5_000
  let closed = false
  let connected = false
  let backoff = 250
  let req: http.ClientRequest | null = null
  let retryTimer: NodeJS.Timeout | null = null
  let staleTimer: NodeJS.Timeout | null = null
  let gotReset = false
  const readyWaiters: (() => void)[] = []

  function apply(ev: RouteEvent): void {
    if (ev.type === 'reset') {
      hub.reset(ev.routes)
      if (!gotReset) {
        gotReset = true
        for (const w of readyWaiters.splice(0)) w()
      }
    } else if (ev.type === 'upsert') hub.upsert(ev.route)
    else if (ev.type === 'remove') hub.remove(ev.instanceId, ev.reason)
  }

  function touch(): void {
    if (staleTimer) clearTimeout(staleTimer)
    staleTimer = setTimeout(() => {
      opts.log.warn({ serviceUrl: opts.serviceUrl }, 'route stream silent; reconnecting')
      req?.destroy()
    }, staleMs)
    staleTimer.unref()
  }

  function schedule(): void {
    connected = false
    if (closed || retryTimer) return
    const wait = backoff
    backoff = Math.min(maxBackoff, backoff * 2)
    retryTimer = setTimeout(() => {
      retryTimer = null
      connect()
    }, wait)
    retryTimer.unref()
  }

  function connect(): void {
    if (closed) return
    const r = lib.get(url, {
      headers: { authorization: `Bearer ${opts.key}`, accept: 'text/event-stream' },
      agent: false,
    })
    req = r
    r.on('response', (res) => {
      if (res.statusCode !== 200) {
        opts.log.error({ status: res.statusCode, serviceUrl: opts.serviceUrl }, 'route stream refused')
        res.resume()
        schedule()
        return
      }
      connected = true
      backoff = 250
      opts.log.info({ serviceUrl: opts.serviceUrl }, 'route stream connected')
      touch()
      res.setEncoding('utf8')
      let buf = ''
      res.on('data', (chunk: string) => {
        touch()
        buf += chunk
        let end: number
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end)
          buf = buf.slice(end + 2)
          let data = ''
          for (const line of block.split('\n'))
            if (line.startsWith('data:')) data += line.slice(line.charCodeAt(5) === 32 ? 6 : 5)
          if (!data) continue
          try {
            apply(JSON.parse(data) as RouteEvent)
          } catch (err) {
            opts.log.error({ err: (err as Error).message }, 'bad route event')
          }
        }
      })
      res.on('close', () => {
        if (staleTimer) clearTimeout(staleTimer)
        if (!closed)
          opts.log.warn({ serviceUrl: opts.serviceUrl }, 'route stream closed; existing routes stay, reconnecting')
        schedule()
      })
    })
    r.on('error', (err: NodeJS.ErrnoException) => {
      if (!closed) opts.log.warn({ code: err.code, serviceUrl: opts.serviceUrl }, 'route stream unavailable')
      schedule()
    })
  }

  connect()

  return {
    subscribe: (listener) => hub.subscribe(listener),
    get connected() {
      return connected
    },
    ready(timeoutMs = 10_000) {
      if (gotReset) return Promise.resolve()
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`no route table from ${opts.serviceUrl} within ${timeoutMs} ms`)),
          timeoutMs,
        )
        readyWaiters.push(() => {
          clearTimeout(t)
          resolve()
        })
      })
    },
    close() {
      closed = true
      if (retryTimer) clearTimeout(retryTimer)
      if (staleTimer) clearTimeout(staleTimer)
      req?.destroy()
    },
  }
}

async function postJson(opts: RemoteOptions, path: string, body: unknown): Promise<Response> {
  const res = await fetch(under(opts.serviceUrl, path), {
    method: 'POST',
    headers: { authorization: `Bearer ${opts.key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5_000),
  })
  if (!res.ok) {
    await res.body?.cancel()
    throw new Error(`${path} answered ${res.status}`)
  }
  return res
}

/** Sends activity batches to the API; a failure throws, and the gateway keeps the batch for the next flush. */
export function createRemoteActivitySink(opts: RemoteOptions): ActivitySink {
  return {
    async recordActivity(entries) {
      if (entries.length === 0) return
      const res = await postJson(opts, '/api/v1/gateway/activity', { entries })
      await res.body?.cancel()
    },
  }
}

/**
 * Sends shared templates' load to the API every second (issue 14), named by a source id per gateway
 * process. Fire and forget: a lost report is replaced by the next one, and the pool does not
 * believe a stale one.
 */
export function createRemoteSharedLoadSink(opts: RemoteOptions): SharedLoadSink {
  // This gateway process's name in its reports: the API adds up several gateways' loads (a restarted
  // gateway is a new source; its old reports age out after 10 s).
  const source = randomUUID()
  return {
    reportSharedLoad(loads) {
      if (loads.length === 0) return
      postJson(opts, '/api/v1/gateway/shared-load', { loads: loads.map((l) => ({ ...l, source })) }).then(
        (res) => res.body?.cancel(),
        () => {},
      )
    },
  }
}

/** Asks the API whether a launch nonce is new; throws when the API is unreachable (the gateway shows a retry page). */
export function createRemoteNonceLedger(opts: RemoteOptions): NonceLedger {
  return {
    async consumeOnce(nonce, expiresAt) {
      const res = await postJson(opts, '/api/v1/gateway/nonces', { nonce, expiresAt })
      const body = (await res.json()) as { first?: unknown }
      if (typeof body.first !== 'boolean') throw new Error('bad nonce answer')
      return body.first
    },
  }
}

/** `path` under the API's URL, keeping its path (an API under `server.publicUrl`'s path): `new URL(path, url)` would drop it. */
export function under(url: string, path: string): URL {
  return new URL(url.replace(/\/+$/, '') + path)
}
