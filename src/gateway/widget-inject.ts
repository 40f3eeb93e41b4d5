import type { ServerResponse } from 'node:http'
import { Transform, type TransformCallback, type Writable } from 'node:stream'
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib'
import { widenCspField } from './widget-csp.js'

/**
 * The warning banner's injection into an app's HTML pages (docs/widget.md), as a rewrite of one
 * response: decided from the status and header fields, then the body streamed through. Only a
 * `200 text/html` page (GET, or HEAD for its header fields) of a top-level document is touched;
 * everything else passes byte for byte.
 *
 * - Encodings: gzip, deflate and br bodies are decoded and sent identity (no Content-Encoding); an
 *   unknown or stacked encoding is left alone (not injected).
 * - Streaming: the tag goes right after the first `<head …>` (else `<body …>`, else `<html …>`) in
 *   the first 64 KiB; bytes before it are held only until it is found, the rest passes as it comes.
 *   No such tag (a fragment, a very long preamble): the page goes through unchanged.
 * - Content-Length, Accept-Ranges and body digests go (the body changed); the ETag gets a suffix,
 *   which the gateway takes off the client's If-None-Match again (`unsuffixIfNoneMatch`), so the
 *   app's 304s still work — and a 304 carries the suffixed tag back.
 * - Content-Security-Policy (and -Report-Only) are widened for the banner (widget-csp.ts).
 * - 206 (a Range request) is never injected: the ranges are the app's bytes.
 */

/** What the rewrite needs to know about one request. */
export interface WidgetInjection {
  /** `<prefix>/.studiopool/`: the path of the banner's files (path mode `/s/<id>/.studiopool/`, subdomain `/.studiopool/`). */
  readonly basePath: string
  /** The client's origin as it reached us (`http://host:port`), for the CSP source. */
  readonly origin: string
  /** The injected tag's nonce. */
  readonly nonce: string
  /** The client's If-None-Match carried our ETag suffix (so a 304's ETag gets it back). */
  readonly suffixedValidator: boolean
  /** HEAD: header fields as for GET, no body. */
  readonly head: boolean
}

/** A response rewrite the forwarder applies (http-exchange.ts): header fields, and optionally a body pipe. */
export interface ResponseRewrite {
  /** `headers` is the flat `[name, value, …]` list about to be sent. `body`, when given, is written the body and ends `res`. */
  begin(status: number, headers: string[], res: ServerResponse): { headers: string[]; body: Writable | null }
}

export const ETAG_SUFFIX = '-spwidget'
/** Where the tag may still come: bytes held at most this long before the page is passed through unchanged. */
export const SCAN_LIMIT = 64 * 1024

const DROPPED = new Set([
  'content-length',
  'content-encoding',
  'accept-ranges',
  'content-md5',
  'digest',
  'content-digest',
  'repr-digest',
])

export function scriptTag(w: Pick<WidgetInjection, 'basePath' | 'nonce'>): string {
  return `<script src="${w.basePath}widget.js" nonce="${w.nonce}" async data-studiopool-widget></script>`
}

export function suffixEtag(etag: string): string {
  const m = /^(W\/)?"([^"]*)"$/.exec(etag.trim())
  return m ? `${m[1] ?? ''}"${m[2]}${ETAG_SUFFIX}"` : etag
}

/** The client's If-None-Match with our suffix taken off its tags; `changed` when there was one. */
export function unsuffixIfNoneMatch(value: string): { value: string; changed: boolean } {
  const out = value.split(`${ETAG_SUFFIX}"`).join('"')
  return { value: out, changed: out !== value }
}

export class WidgetRewrite implements ResponseRewrite {
  constructor(readonly w: WidgetInjection) {}

  begin(status: number, headers: string[], res: ServerResponse): { headers: string[]; body: Writable | null } {
    const f = fields(headers)
    const csp = { source: this.w.origin + this.w.basePath, nonce: this.w.nonce }
    if (status === 304) {
      // The client revalidates the injected page: its stored fields are refreshed from these.
      return {
        headers: mapFields(headers, (n, v) =>
          n === 'etag' && this.w.suffixedValidator ? suffixEtag(v) : isCsp(n) ? widenCspField(v, csp) : v,
        ),
        body: null,
      }
    }
    const decoder =
      status === 200 && isHtml(f.get('content-type')) && !f.has('content-range')
        ? decoderFor(f.get('content-encoding'))
        : undefined
    if (decoder === undefined) return { headers, body: null }
    const out: string[] = []
    for (let i = 0; i < headers.length; i += 2) {
      const n = headers[i]!.toLowerCase()
      const v = headers[i + 1]!
      if (DROPPED.has(n)) continue
      out.push(headers[i]!, n === 'etag' ? suffixEtag(v) : isCsp(n) ? widenCspField(v, csp) : v)
    }
    if (this.w.head) return { headers: out, body: null }
    const injector = new HtmlInjector(scriptTag(this.w))
    injector.pipe(res)
    if (decoder === null) return { headers: out, body: injector }
    decoder.on('error', () => res.destroy())
    decoder.pipe(injector)
    return { headers: out, body: decoder }
  }
}

function fields(headers: readonly string[]): Map<string, string> {
  const m = new Map<string, string>()
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!.toLowerCase()
    const v = headers[i + 1]!
    m.set(n, m.has(n) ? `${m.get(n)}, ${v}` : v)
  }
  return m
}

function mapFields(headers: readonly string[], f: (lowerName: string, value: string) => string): string[] {
  const out: string[] = []
  for (let i = 0; i < headers.length; i += 2) out.push(headers[i]!, f(headers[i]!.toLowerCase(), headers[i + 1]!))
  return out
}

const isCsp = (n: string) => n === 'content-security-policy' || n === 'content-security-policy-report-only'

function isHtml(type: string | undefined): boolean {
  return type !== undefined && /^\s*text\/html\s*(;|$)/i.test(type)
}

/** null: identity (no decoding needed); undefined: an encoding we do not undo (not injected). */
function decoderFor(encoding: string | undefined): Transform | null | undefined {
  const e = (encoding ?? '').trim().toLowerCase()
  if (e === '' || e === 'identity') return null
  if (e === 'gzip' || e === 'x-gzip') return createGunzip()
  if (e === 'deflate') return createInflate()
  if (e === 'br') return createBrotliDecompress()
  return undefined
}

const HEAD_TAG = /<head(?:[\t\n\f\r ][^>]*)?>/i
const BODY_TAG = /<body(?:[\t\n\f\r ][^>]*)?>/i
const HTML_TAG = /<html(?:[\t\n\f\r ][^>]*)?>/i

/**
 * Where the tag goes in the page's first bytes (latin1, so offsets are bytes), or -1 when not yet
 * known. `final`: no more bytes will come (the end of the page, or the scan limit).
 */
export function insertionPoint(text: string, final: boolean): number {
  const head = HEAD_TAG.exec(text)
  if (head) return head.index + head[0].length
  const body = BODY_TAG.exec(text)
  if (body) return body.index + body[0].length
  if (!final) return -1
  const html = HTML_TAG.exec(text)
  return html ? html.index + html[0].length : -1
}

/** Holds the page's first bytes until the tag's place is found, then passes everything through. */
export class HtmlInjector extends Transform {
  #held: Buffer | null = Buffer.alloc(0)
  readonly #tag: Buffer

  constructor(tag: string) {
    super()
    this.#tag = Buffer.from(tag, 'utf8')
  }

  /** Whether the tag went in (for tests and logs). */
  injected = false

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.#held === null) return cb(null, chunk)
    const held = Buffer.concat([this.#held, chunk])
    const limit = held.length >= SCAN_LIMIT
    this.#settle(held, limit)
    cb()
  }

  override _flush(cb: TransformCallback): void {
    if (this.#held !== null) this.#settle(this.#held, true)
    cb()
  }

  #settle(held: Buffer, final: boolean): void {
    const at = insertionPoint(held.toString('latin1', 0, Math.min(held.length, SCAN_LIMIT)), final)
    if (at < 0 && !final) {
      this.#held = held
      return
    }
    this.#held = null
    if (at < 0) return void this.push(held)
    this.injected = true
    this.push(held.subarray(0, at))
    this.push(this.#tag)
    if (at < held.length) this.push(held.subarray(at))
  }
}
