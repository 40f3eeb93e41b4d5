import type { FastifyInstance } from 'fastify'
import { ValidationError } from '../domain/errors.js'

/**
 * JSON request bodies, strictly (issue 9 item 8). JSON.parse resolves a duplicate key last-wins,
 * so `{"role":"requester","role":"admin"}` passed a schema check made for one and created the
 * other; and a lone surrogate (`"\ud800"`) parses to a string that is not valid Unicode. Both are
 * refused with 400 INVALID_REQUEST. Fastify's own parser still does the parsing (and keeps
 * refusing `__proto__` and `constructor.prototype`); this adds a scan of the text.
 */
export function registerStrictJson(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    void parse(req, body as string, (err: Error | null, value?: unknown) => {
      if (err) return done(err, undefined)
      const problem = findJsonProblem(body as string)
      if (problem) return done(new ValidationError(problem, [{ path: '/body', message: problem }]), undefined)
      done(null, value)
    })
  })
}

/**
 * Scans JSON text that JSON.parse accepted, and says what is wrong with it, if anything: a key
 * that appears twice in one object (compared after unescaping, so `"a"` and `"\u0061"` are the
 * same key), a string holding a lone UTF-16 surrogate, or a NUL. Linear; keeps one key set per open object.
 */
export function findJsonProblem(text: string): string | undefined {
  // One entry per open container: a key set for an object, null for an array.
  const stack: (Set<string> | null)[] = []
  let expectKey = false
  const n = text.length
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x7b /* { */) {
      stack.push(new Set())
      expectKey = true
    } else if (c === 0x5b /* [ */) {
      stack.push(null)
      expectKey = false
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop()
      expectKey = false
    } else if (c === 0x2c /* , */) {
      expectKey = stack[stack.length - 1] instanceof Set
    } else if (c === 0x22 /* " */) {
      const start = i
      let escaped = false
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i)
        if (d === 0x5c /* \ */) {
          escaped = true
          i++
        } else if (d === 0x22) break
      }
      const value = escaped ? (JSON.parse(text.slice(start, i + 1)) as string) : text.slice(start + 1, i)
      if (!isWellFormed(value)) return 'the body holds a lone UTF-16 surrogate (not valid Unicode)'
      // No store keeps a NUL in text (Postgres refuses the statement), and no field needs one.
      if (value.includes('\u0000')) return 'the body holds a NUL character'
      const keys = stack[stack.length - 1]
      if (expectKey && keys) {
        if (keys.has(value)) return `duplicate key "${value.slice(0, 64)}" in the JSON body`
        keys.add(value)
        expectKey = false
      }
    }
  }
  return undefined
}

const LONE_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/
function isWellFormed(s: string): boolean {
  return !LONE_SURROGATE_RE.test(s)
}
