import type { TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors'
import type { ErrorDetail } from '../domain/errors.js'

/**
 * Configuration errors an operator can act on (issue 17): each names the key (its path), the value
 * and what is allowed, with "did you mean" for a misspelt key or choice, instead of TypeBox's raw
 * text (`Expected union value`). Used by the loader for the file and by the providers for their own
 * settings. A value whose schema is a secret (`description: 'a secret…'`) is never echoed.
 */
export function explainErrors(schema: TSchema, value: unknown, base = ''): ErrorDetail[] {
  const out: ErrorDetail[] = []
  for (const e of Value.Errors(schema, value)) {
    const path = `${base}${e.path}` || '/'
    if (out.some((p) => p.path === path)) continue // one message per key
    const tagged = e.type === ValueErrorType.Union ? taggedUnion(e, base) : undefined
    if (tagged) out.push(...tagged.filter((t) => !out.some((p) => p.path === t.path)))
    else out.push({ path, message: explainOne(e) })
  }
  return out
}

/**
 * Objects told apart by a literal field (`store.driver`): an unknown tag is the one problem; else the
 * problems of the branch the tag picks.
 */
function taggedUnion(e: ValueError, base: string): ErrorDetail[] | undefined {
  const branches = ((e.schema as Record<string, unknown>).anyOf as Record<string, unknown>[]) ?? []
  const props = branches.map((b) => (b.properties ?? {}) as Record<string, Record<string, unknown>>)
  const tag = Object.keys(props[0] ?? {}).find((k) => props.every((p) => p[k] && 'const' in p[k]))
  if (!tag || !e.value || typeof e.value !== 'object') return undefined
  const given = (e.value as Record<string, unknown>)[tag]
  const tags = props.map((p) => String(p[tag]!.const))
  const i = tags.indexOf(String(given))
  if (i < 0) {
    const hint = typeof given === 'string' ? suggestion(given, tags) : ''
    return [{ path: `${base}${e.path}/${tag}`, message: `${show(given)} is not one of: ${tags.join(', ')}${hint}` }]
  }
  // The union's defaults were not filled in (no branch fitted): fill the picked branch's before judging.
  const filled = Value.Default(branches[i] as TSchema, structuredClone(e.value))
  return explainErrors(branches[i] as TSchema, filled, `${base}${e.path}`)
}

/** The closest candidate to a misspelt word, when it is close enough to be what was meant. */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase()
  let best: string | undefined
  let bestDistance = Infinity
  for (const c of candidates) {
    const d = c.toLowerCase() === w ? 0 : distance(w, c.toLowerCase())
    if (d < bestDistance) [best, bestDistance] = [c, d]
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined
}

/** `; did you mean "x"?` or nothing. */
export const suggestion = (word: string, candidates: readonly string[]): string => {
  const s = didYouMean(word, candidates)
  return s ? `; did you mean "${s}"?` : ''
}

function explainOne(e: ValueError): string {
  const s = e.schema as TSchema & Record<string, unknown>
  const shown = isSecret(s) ? '(a secret, not shown)' : show(e.value)
  switch (e.type) {
    case ValueErrorType.ObjectAdditionalProperties: {
      const key = lastSegment(e.path)
      const allowed = Object.keys((s.properties as object | undefined) ?? {})
      return `unknown key "${key}"${suggestion(key, allowed)} (allowed: ${allowed.join(', ') || 'none'})`
    }
    case ValueErrorType.ObjectRequiredProperty:
      return `required key "${lastSegment(e.path)}" is missing`
    case ValueErrorType.Union:
      return explainUnion(s, e, shown)
    case ValueErrorType.Literal:
      return `${shown} is not allowed: must be ${show(s.const)}`
    case ValueErrorType.Integer:
    case ValueErrorType.IntegerMinimum:
    case ValueErrorType.IntegerMaximum:
    case ValueErrorType.Number:
    case ValueErrorType.NumberMinimum:
    case ValueErrorType.NumberMaximum:
      return `not allowed: ${shown} (${numberRange(s)})`
    case ValueErrorType.String:
      return `expected a string: got ${shown}`
    case ValueErrorType.StringPattern:
      return `not allowed: ${shown} (${typeof s.description === 'string' ? s.description : `must match ${String(s.pattern)}`})`
    case ValueErrorType.StringMinLength:
      return s.minLength === 1 ? 'must not be empty' : `too short: at least ${String(s.minLength)} characters`
    case ValueErrorType.StringMaxLength:
      return `too long: at most ${String(s.maxLength)} characters`
    case ValueErrorType.Boolean:
      return `expected true or false: got ${shown}`
    case ValueErrorType.Array:
      return `expected a list: got ${shown}`
    case ValueErrorType.ArrayMinItems:
      return `at least ${String(s.minItems)} item(s) needed`
    case ValueErrorType.ArrayMaxItems:
      return `at most ${String(s.maxItems)} items allowed`
    case ValueErrorType.Object:
      return `expected a mapping of keys: got ${shown}`
    case ValueErrorType.ObjectMaxProperties:
      return `at most ${String(s.maxProperties)} entries allowed`
    default:
      return `${e.message.charAt(0).toLowerCase()}${e.message.slice(1)}: got ${shown}`
  }
}

/** A choice (literals), a duration, or alternatives of which one must fit (the branch nearest to fitting). */
function explainUnion(s: TSchema & Record<string, unknown>, e: ValueError, shown: string): string {
  const branches = (s.anyOf as (TSchema & Record<string, unknown>)[]) ?? []
  const literals = branches.filter((b) => 'const' in b).map((b) => b.const as string | number | boolean)
  if (literals.length === branches.length && literals.length > 0) {
    const hint = typeof e.value === 'string' ? suggestion(e.value, literals.map(String)) : ''
    return `${shown} is not one of: ${literals.map(String).join(', ')}${hint}`
  }
  if (typeof s.description === 'string' && s.description.startsWith('a duration')) {
    return `not a duration: ${typeof e.value === 'string' ? e.value : shown} (allowed: 90s, 30m, 12h, 1d, or a number of milliseconds)`
  }
  const nested = e.errors.map((it) => [...it])
  const fewest = nested.reduce((a, b) => (b.length < a.length ? b : a), nested[0] ?? [])
  const first = fewest[0]
  if (first && first.path !== e.path) return explainOne(first)
  const what = branches.map((b) => (typeof b.description === 'string' ? b.description : String(b.type))).join(' or ')
  return `not allowed: ${shown} (expected ${what})`
}

function numberRange(s: Record<string, unknown>): string {
  const kind = s.type === 'integer' ? 'a whole number' : 'a number'
  const min = typeof s.minimum === 'number' ? s.minimum : undefined
  const max = typeof s.maximum === 'number' ? s.maximum : undefined
  if (min !== undefined && max !== undefined) return `${kind} from ${min} to ${max}`
  if (min !== undefined) return `${kind}, at least ${min}`
  if (max !== undefined) return `${kind}, at most ${max}`
  return kind
}

const isSecret = (s: Record<string, unknown>) =>
  typeof s.description === 'string' && s.description.startsWith('a secret')

function show(v: unknown): string {
  if (v === undefined) return 'nothing'
  const text = typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v))
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}

const lastSegment = (path: string) => (path.split('/').pop() ?? '').replaceAll('~1', '/').replaceAll('~0', '~')

/** Levenshtein distance. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return row[b.length]!
}

/**
 * A provider's settings problems as the provider words them: `<prefix><path>: <message>`, the path
 * dotted (`local.comand`) unless `slashes`. Empty when the settings fit.
 */
export function settingsProblems(schema: TSchema, raw: unknown, prefix: string, slashes = false): string[] {
  if (Value.Check(schema, raw)) return []
  const out = explainErrors(schema, raw).map(
    (p) => `${prefix}${slashes ? p.path : p.path === '/' ? '' : p.path!.replaceAll('/', '.')}: ${p.message}`,
  )
  return out.length ? out : [`${prefix}: invalid`]
}
