import type { Config } from '../config/types.js'
import { isInstanceId } from '../domain/ids.js'
import { LAUNCH_PARAM, sessionUrl, SWITCH_PARAM } from './tokens.js'

/**
 * The first station of a request: which session it is for, from the path (`/s/{id}/…`, path
 * mode) or the host (`{id}.sessions.example.org`, subdomain mode); the session URL without the
 * launch token; the launch token itself. Pure: no table, no tokens, no I/O.
 */

/** What a request's URL and Host say. */
export type Resolved =
  /** A session request: `prefix` is `/s/{id}` in path mode ('' in subdomain mode), `rest` the path and query after it. */
  | { readonly kind: 'session'; readonly id: string; readonly prefix: string; readonly rest: string }
  /** `/s/{id}` without the slash, or a path-mode link on the main host in subdomain mode. */
  | { readonly kind: 'redirect'; readonly location: string }
  /** Looks like a session request but the id is not one (404 without touching the table). */
  | { readonly kind: 'bad-id' }
  /** Not a session request (API, dashboard, default target). */
  | null

const PREFIX_LEN = 3 // '/s/'
const ID_LEN = 20
const ID_END = PREFIX_LEN + ID_LEN

export class SessionPaths {
  readonly #cfg: Config['gateway']
  readonly #publicUrl: string
  readonly #basePath: string
  /** The session domain, lowercased, in subdomain mode; null in path mode. */
  readonly subdomain: string | null

  /** `basePath`: `Config['server']['basePath']`, the path of publicUrl ('' or `/studiopool`). */
  constructor(cfg: Config['gateway'], publicUrl: string, basePath = '') {
    this.#cfg = cfg
    this.#publicUrl = publicUrl
    this.#basePath = basePath
    this.subdomain = cfg.mode === 'subdomain' && cfg.sessionDomain ? cfg.sessionDomain.toLowerCase() : null
  }

  /** Whether a Host names a session (subdomain mode): such requests are not under `server.basePath`. */
  isSessionHost(host: string | undefined): boolean {
    if (this.subdomain === null || !host) return false
    const r = this.resolve('/', host)
    return r !== null && r.kind !== 'redirect'
  }

  /** The session a request is for, from its URL (`req.url`) and Host field. */
  resolve(url: string, host: string | undefined): Resolved {
    const subdomain = this.subdomain
    if (subdomain === null) return pathSession(url, this.#basePath)
    if (host) {
      const colon = host.indexOf(':')
      const name = (colon >= 0 ? host.slice(0, colon) : host).toLowerCase()
      if (
        name.length > subdomain.length + 1 &&
        name.endsWith(subdomain) &&
        name.charCodeAt(name.length - subdomain.length - 1) === 46 /* . */
      ) {
        const label = name.slice(0, name.length - subdomain.length - 1)
        if (label.indexOf('.') >= 0 || !isInstanceId(label)) return { kind: 'bad-id' }
        return { kind: 'session', id: label, prefix: '', rest: url }
      }
    }
    // A path-mode link on the main host: send it to the session's own origin.
    if (!url.startsWith('/s/')) return null
    const id = url.slice(PREFIX_LEN, ID_END)
    const c = url.charCodeAt(ID_END)
    if (!isInstanceId(id) || !(Number.isNaN(c) || c === 47 || c === 63)) return { kind: 'bad-id' }
    const rest = c === 47 ? url.slice(ID_END + 1) : url.slice(ID_END)
    return { kind: 'redirect', location: sessionUrl(this.#cfg, this.#publicUrl, id) + rest }
  }

  /** The session URL without the launch token: path (+query) in path mode, absolute in subdomain mode. */
  cleanUrl(id: string, rest: string): string {
    const q = rest.indexOf('?')
    let path = q >= 0 ? rest.slice(0, q) : rest
    let query = ''
    if (q >= 0) {
      const params = new URLSearchParams(rest.slice(q + 1))
      params.delete(LAUNCH_PARAM)
      params.delete(SWITCH_PARAM)
      const s = params.toString()
      if (s) query = '?' + s
    }
    if (this.subdomain !== null) return sessionUrl(this.#cfg, this.#publicUrl, id).slice(0, -1) + (path || '/') + query
    if (!path.startsWith('/')) path = '/' + path
    return `${this.#basePath}/s/${id}${path}${query}`
  }
}

/**
 * Path mode: `/s/{id}/…` is a session, `/s/{id}` and `/s/{id}?…` get their slash, `/s/<not an id>…`
 * is a bad id. The URL arrives without the base path (the listener stripped it, base-path.ts); the
 * prefix and the redirect, what the browser sees, have it again.
 */
function pathSession(url: string, basePath: string): Resolved {
  if (!url.startsWith('/s/')) return null
  const id = url.slice(PREFIX_LEN, ID_END)
  if (!isInstanceId(id)) return { kind: 'bad-id' }
  const c = url.charCodeAt(ID_END)
  if (c === 47 /* / */) return { kind: 'session', id, prefix: basePath + url.slice(0, ID_END), rest: url.slice(ID_END) }
  if (Number.isNaN(c) || c === 63 /* ? */)
    return { kind: 'redirect', location: `${basePath}/s/${id}/${url.slice(ID_END)}` }
  return { kind: 'bad-id' }
}

/** The launch token of a session path's query, or null. */
export function launchToken(rest: string): string | null {
  return queryParam(rest, LAUNCH_PARAM)
}

/** One query parameter of a path, or null; cheap when the name is absent. */
export function queryParam(rest: string, name: string): string | null {
  const q = rest.indexOf('?')
  if (q < 0 || rest.indexOf(name + '=', q) < 0) return null
  return new URLSearchParams(rest.slice(q + 1)).get(name)
}

/** The Host field from raw headers, without building node's headers object. */
export function rawHost(raw: readonly string[]): string | undefined {
  for (let i = 0; i < raw.length; i += 2)
    if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') return raw[i + 1]
  return undefined
}
