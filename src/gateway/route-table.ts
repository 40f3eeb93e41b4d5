import type { RouteEntry, RouteEvent, RouteSource } from '../domain/routes.js'

/** A route plus what forwarding needs, parsed once when the route arrives, not per request. */
export interface CompiledRoute {
  readonly entry: RouteEntry
  /** Upstream host name (brackets removed for IPv6), or null when the route has no address. */
  readonly hostname: string | null
  readonly port: number
  /** `host:port` as the upstream expects it in `Host` (the seed's changeOrigin). */
  readonly targetHost: string | null
  /** `http://host:port`, for rewriting absolute `Location`s the app sends. */
  readonly targetOrigin: string | null
  /** A path the app lives under on its host (from the seed's ROUTE_TO_REPLACE), without trailing slash; usually ''. */
  readonly targetBasePath: string
  /** The template's keep-alive polling paths (entry.activityIgnore) as one expression; null when none. */
  readonly activityIgnore: RegExp | null
}

export interface RouteTableOptions {
  /** Seed compatibility: `ROUTE_TO_REPLACE` with `STRING_TO_REPLACE` replaced by the address's host. */
  readonly routeToReplace?: string | null
  readonly stringToReplace?: string | null
}

/** Why a route's open connections must be closed. */
export type RouteDrop = { readonly instanceId: string; readonly reason: string }

/**
 * The gateway's own table: a Map keyed by instanceId (O(1) lookups; the gateway slices the id
 * out of a fixed-position path prefix or the host's first label, so nothing is ever scanned).
 * Kept current from a RouteSource. `onDrop` is told when an instance's connections must go:
 * it was removed, or it came back with a new generation or a different address.
 */
export class RouteTable {
  readonly #routes = new Map<string, CompiledRoute>()
  /** Shared templates' instances (issue 14), by template: what `/a/<template>/` chooses from. */
  readonly #shared = new Map<string, Map<string, CompiledRoute>>()
  readonly #opts: RouteTableOptions
  readonly #onDrop: (drop: RouteDrop) => void
  #unsubscribe: (() => void) | null = null

  constructor(opts: RouteTableOptions & { onDrop?: (drop: RouteDrop) => void } = {}) {
    this.#opts = opts
    this.#onDrop = opts.onDrop ?? (() => {})
  }

  /** Follows a source until `close()`. The source sends a `reset` first. */
  follow(source: RouteSource): void {
    this.#unsubscribe?.()
    this.#unsubscribe = source.subscribe((event) => this.apply(event))
  }

  close(): void {
    this.#unsubscribe?.()
    this.#unsubscribe = null
  }

  get(instanceId: string): CompiledRoute | undefined {
    return this.#routes.get(instanceId)
  }

  get size(): number {
    return this.#routes.size
  }

  /** The live instances of a shared template (none when it has none). */
  sharedRoutes(template: string): Iterable<CompiledRoute> {
    return this.#shared.get(template)?.values() ?? []
  }

  #delete(id: string): boolean {
    const old = this.#routes.get(id)
    if (!old) return false
    this.#routes.delete(id)
    this.#shared.get(old.entry.template)?.delete(id)
    return true
  }

  apply(event: RouteEvent): void {
    switch (event.type) {
      case 'upsert':
        this.#put(event.route)
        break
      case 'remove':
        if (this.#delete(event.instanceId)) this.#onDrop({ instanceId: event.instanceId, reason: event.reason })
        break
      case 'reset': {
        const seen = new Set<string>()
        for (const r of event.routes) {
          seen.add(r.instanceId)
          this.#put(r)
        }
        for (const id of [...this.#routes.keys()]) {
          if (!seen.has(id)) {
            this.#delete(id)
            this.#onDrop({ instanceId: id, reason: 'removed' })
          }
        }
        break
      }
    }
  }

  #put(entry: RouteEntry): void {
    const old = this.#routes.get(entry.instanceId)
    const compiled = compileRoute(entry, this.#opts)
    this.#routes.set(entry.instanceId, compiled)
    if (entry.shared) {
      let set = this.#shared.get(entry.template)
      if (!set) this.#shared.set(entry.template, (set = new Map()))
      set.set(entry.instanceId, compiled)
    } else if (old?.entry.shared) this.#shared.get(old.entry.template)?.delete(entry.instanceId)
    if (
      old &&
      (old.entry.generation !== entry.generation ||
        old.targetOrigin !== compiled.targetOrigin ||
        (entry.state !== 'ready' && old.entry.state === 'ready'))
    ) {
      this.#onDrop({
        instanceId: entry.instanceId,
        reason: old.entry.generation !== entry.generation ? 'new generation' : 'route changed',
      })
    }
  }
}

export function compileRoute(entry: RouteEntry, opts: RouteTableOptions = {}): CompiledRoute {
  let address = entry.address
  if (address && opts.routeToReplace && opts.stringToReplace) {
    // The seed built the target as ROUTE_TO_REPLACE with STRING_TO_REPLACE swapped for the instance's address.
    let host = address
    try {
      host = new URL(address).hostname
    } catch {
      // a bare host name
    }
    address = opts.routeToReplace.replace(opts.stringToReplace, host)
  }
  const activityIgnore = ignoreExpression(entry.activityIgnore)
  if (!address)
    return { entry, hostname: null, port: 0, targetHost: null, targetOrigin: null, targetBasePath: '', activityIgnore }
  let url: URL
  try {
    url = new URL(address)
  } catch {
    return { entry, hostname: null, port: 0, targetHost: null, targetOrigin: null, targetBasePath: '', activityIgnore }
  }
  if (url.protocol !== 'http:')
    return { entry, hostname: null, port: 0, targetHost: null, targetOrigin: null, targetBasePath: '', activityIgnore }
  const port = url.port ? Number(url.port) : 80
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
  const base = url.pathname.replace(/\/+$/, '')
  return { entry, hostname, port, targetHost: url.host, targetOrigin: url.origin, targetBasePath: base, activityIgnore }
}

/** One expression for a template's keep-alive paths; a source that does not compile is skipped (the config checks them). */
function ignoreExpression(sources: readonly string[] | undefined): RegExp | null {
  if (!sources?.length) return null
  const ok = sources.filter((src) => {
    try {
      new RegExp(src)
      return true
    } catch {
      return false
    }
  })
  return ok.length ? new RegExp(ok.map((src) => `(?:${src})`).join('|')) : null
}
