import { createHash } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import { AppError, ValidationError } from '../domain/errors.js'

/**
 * Paging of the REST API's lists (README "Paging"): every list takes `limit` (a default, and a
 * maximum that is refused with 400 INVALID_REQUEST when exceeded, never a silent cap) and `cursor`,
 * and answers its rows under the list's own key (`instances`, `history`, …, kept for old clients)
 * with `nextCursor` (null on the last page) and `total` (the rows matching the filters now), plus a
 * `Link: <?…&cursor=…>; rel="next"` header (RFC 8288; a query-only reference, resolved against the
 * request's own URL, so it stays right behind a proxy that serves the API under a path).
 *
 * Keyset paging: a cursor holds the last row's key in the list's fixed order, and the next page
 * reads the rows after it. Rows inserted or deleted between two pages therefore never shift the
 * others: a row that exists for the whole walk is listed exactly once (an offset would skip or
 * repeat rows). A cursor is base64url JSON `{l: list, f: digest of the filters, k: key}`; it is
 * checked for its shape, its list and the filters it was issued for, and anything else is
 * 400 INVALID_CURSOR (it is not secret: a hand-made one only moves the start of the page).
 */

/** A list's key: the values of its order columns, each a string or a non-negative integer. */
export type CursorKey = readonly (string | number)[]
type KeyShape = readonly ('string' | 'int')[]

export interface ListSpec {
  /** The name cursors carry (a cursor of one list is refused by another). */
  readonly name: string
  readonly defaultLimit: number
  readonly maxLimit: number
  readonly key: KeyShape
}

/** The lists that page, with their page sizes (README "Paging" has the same table). */
export const LISTS = {
  instances: { name: 'instances', defaultLimit: 1000, maxLimit: 10_000, key: ['string'] },
  history: { name: 'history', defaultLimit: 100, maxLimit: 10_000, key: ['int', 'int'] },
  audit: { name: 'audit', defaultLimit: 200, maxLimit: 5000, key: ['int'] },
  keys: { name: 'keys', defaultLimit: 1000, maxLimit: 1000, key: ['int', 'string'] },
  deliveries: { name: 'deliveries', defaultLimit: 100, maxLimit: 1000, key: ['int'] },
  queue: { name: 'queue', defaultLimit: 100, maxLimit: 1000, key: ['int', 'string'] },
} as const satisfies Record<string, ListSpec>

/** The `limit` and `cursor` query parameters of a list. */
export const pageQuery = (spec: ListSpec) => ({
  limit: Type.Optional(
    Type.String({
      description: `page size, 1 to ${spec.maxLimit} (default ${spec.defaultLimit}); more is refused, not capped`,
      pattern: '^\\d{1,9}$',
    }),
  ),
  cursor: Type.Optional(
    Type.String({ description: "the previous page's nextCursor (opaque)", minLength: 1, maxLength: 1000 }),
  ),
})

export class InvalidCursorError extends AppError {
  constructor(why: string) {
    super(
      'INVALID_CURSOR',
      `invalid cursor: ${why}; use a nextCursor from this list with the same filters, or start without one`,
      {
        details: [{ path: '/querystring/cursor', message: why }],
      },
    )
  }
}

/** The page size asked for: the default when absent, 400 INVALID_REQUEST when 0 or over the maximum. */
export function pageLimit(spec: ListSpec, limit: string | undefined): number {
  if (limit === undefined) return spec.defaultLimit
  const n = Number(limit)
  if (!Number.isInteger(n) || n < 1 || n > spec.maxLimit)
    throw new ValidationError(`limit must be between 1 and ${spec.maxLimit} for this list; page on with cursor`, [
      { path: '/querystring/limit', message: `1 to ${spec.maxLimit}` },
    ])
  return n
}

/** The filters as one short digest: a cursor is only valid for the filters it was issued for. */
function digest(filters: Record<string, unknown>): string {
  const sorted = Object.keys(filters)
    .sort()
    .filter((k) => filters[k] !== undefined)
    .map((k) => [k, filters[k]])
  return createHash('sha256').update(JSON.stringify(sorted)).digest('base64url').slice(0, 16)
}

export function encodeCursor(spec: ListSpec, filters: Record<string, unknown>, key: CursorKey): string {
  return Buffer.from(JSON.stringify({ l: spec.name, f: digest(filters), k: key })).toString('base64url')
}

/** The key a cursor holds, or undefined without one; InvalidCursorError for anything not issued by this list. */
export function decodeCursor(
  spec: ListSpec,
  filters: Record<string, unknown>,
  cursor: string | undefined,
): CursorKey | undefined {
  if (cursor === undefined) return undefined
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw new InvalidCursorError('not base64url')
  let v: unknown
  try {
    v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    throw new InvalidCursorError('garbled')
  }
  const c = v as { l?: unknown; f?: unknown; k?: unknown } | null
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new InvalidCursorError('garbled')
  if (c.l !== spec.name) throw new InvalidCursorError(`not a cursor of this list (${spec.name})`)
  if (c.f !== digest(filters)) throw new InvalidCursorError('issued for other filters')
  const k = c.k
  const ok =
    Array.isArray(k) &&
    k.length === spec.key.length &&
    spec.key.every((t, i) =>
      t === 'int'
        ? Number.isSafeInteger(k[i]) && (k[i] as number) >= 0
        : typeof k[i] === 'string' && (k[i] as string).length > 0 && (k[i] as string).length <= 200,
    )
  if (!ok) throw new InvalidCursorError('garbled')
  return k as CursorKey
}

/**
 * One page from the rows read with `limit + 1` (the extra row says whether there is a next page, so
 * the last page has `nextCursor: null` rather than a cursor to an empty page), with its Link header.
 */
export function pageOf<T>(
  req: FastifyRequest,
  reply: FastifyReply,
  spec: ListSpec,
  page: { readonly rows: readonly T[]; readonly limit: number; readonly total: number },
  filters: Record<string, unknown>,
  keyOf: (row: T) => CursorKey,
): { rows: readonly T[]; nextCursor: string | null; total: number } {
  const rows = page.rows.slice(0, page.limit)
  const more = page.rows.length > page.limit
  const nextCursor = more ? encodeCursor(spec, filters, keyOf(rows[rows.length - 1]!)) : null
  if (nextCursor !== null) {
    const at = req.url.indexOf('?')
    const q = new URLSearchParams(at >= 0 ? req.url.slice(at + 1) : '')
    q.set('cursor', nextCursor)
    void reply.header('link', `<?${q.toString()}>; rel="next"`)
  }
  return { rows, nextCursor, total: page.total }
}
