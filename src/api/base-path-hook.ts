import type { FastifyInstance } from 'fastify'

/** Root-relative URLs in the dashboard's markup: `href="/…"`, `src`, `action`, `formaction`, `data-events` (not `//host`). */
const ROOT_RELATIVE = /\b(href|src|action|formaction|data-events)="\/(?!\/)/g

/**
 * Sub-path hosting (`server.basePath`, gateway/base-path.ts): the listener stripped the prefix from
 * the request, so routes and the pages they write speak root-relative paths; this puts the prefix
 * back on what leaves, in one place: a root-relative `Location` and the root-relative links of HTML
 * bodies (the dashboard, the login and error pages, the API docs). Cookies get their Path from
 * web/session.ts; absolute URLs are built from `server.publicUrl`, which has the prefix already.
 */
export function installBasePath(app: FastifyInstance, basePath: string): void {
  if (basePath === '') return
  app.addHook('onSend', async (_req, reply, payload) => {
    const loc = reply.getHeader('location')
    if (typeof loc === 'string' && loc.startsWith('/') && !loc.startsWith('//'))
      reply.header('location', basePath + loc)
    const type = reply.getHeader('content-type')
    if (typeof payload === 'string' && typeof type === 'string' && type.startsWith('text/html'))
      return prefixLinks(payload, basePath)
    return payload
  })
}

/** `html` with `basePath` before every root-relative link. */
export function prefixLinks(html: string, basePath: string): string {
  return html.replace(ROOT_RELATIVE, (_m, attr: string) => `${attr}="${basePath}/`)
}
