import type { IncomingMessage } from 'node:http'
import { headerSafe, renderUpstreamHeader } from '../domain/upstream-headers.js'
import type { AccessPolicy } from './access.js'
import type { ForwardContext, RequestHeads } from './headers.js'
import type { CompiledRoute } from './route-table.js'
import { withoutCookie } from './session-cookie.js'
import type { SessionClaims, TokenService } from './tokens.js'

const NO_FIELDS: readonly string[] = Object.freeze([])

/**
 * The last station before the forwarder: what the gateway decided about a request, as the
 * `ForwardContext` the forwarder reads (the app's path, the client's address, scheme and host,
 * the cookie without ours, the fields the gateway adds for the app).
 */
export class ForwardContexts {
  /** The owner's identity and the template's upstreamHeaders, per route (its owner and generation are fixed). */
  readonly #upstream = new WeakMap<CompiledRoute, readonly string[]>()

  constructor(
    readonly tokens: TokenService,
    readonly access: AccessPolicy,
    readonly cookieName: string,
    /** The seed's DEFAULT_URL target: the app gets no identity fields. */
    readonly defaultRoute: CompiledRoute | null,
  ) {}

  build(
    req: IncomingMessage,
    heads: RequestHeads,
    route: CompiledRoute,
    prefix: string,
    rest: string,
    claims?: SessionClaims,
  ): ForwardContext {
    const strip = prefix !== '' && route.entry.pathMode === 'strip'
    const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true
    // X-Forwarded-* are believed only from the peers in server.trustProxy.
    const trusted = this.access.isTrusted(req)
    const xfp = trusted ? heads.xForwardedProto?.split(',')[0]!.trim() : undefined
    const xfh = trusted ? heads.xForwardedHost?.split(',')[0]!.trim() : undefined
    return {
      route,
      prefix,
      path: strip ? rest : prefix + rest,
      strip,
      heads,
      clientIp: req.socket.remoteAddress ?? '',
      proto: xfp || (encrypted ? 'https' : 'http'),
      host: xfh || heads.host || this.access.publicHost,
      priorForwardedFor: trusted ? heads.xForwardedFor : undefined,
      cookie: withoutCookie(heads.cookie, this.cookieName),
      cookieName: this.cookieName,
      upstream: route === this.defaultRoute ? NO_FIELDS : this.#fields(route, claims),
    }
  }

  #fields(route: CompiledRoute, claims: SessionClaims | undefined): readonly string[] {
    const e = route.entry
    if (e.ownerId === null) return NO_FIELDS
    let base = this.#upstream.get(route)
    if (base === undefined) {
      const list: string[] = ['x-forwarded-user', headerSafe(e.ownerId)]
      const tpl = e.upstreamHeaders
      if (tpl) {
        // Never logged: the values may hold the app token.
        const values = {
          appToken: this.tokens.appToken(e.instanceId, e.generation),
          user: e.ownerId,
          instanceId: e.instanceId,
        }
        for (const [name, value] of Object.entries(tpl))
          list.push(name.toLowerCase(), renderUpstreamHeader(value, values))
      }
      this.#upstream.set(route, (base = list))
    }
    // Groups only when the login knows them and they are the owner's own (not an admin's visiting).
    if (claims && claims.userId === e.ownerId && claims.groups.length)
      return [...base, 'x-forwarded-groups', headerSafe(claims.groups.join(','))]
    return base
  }
}
