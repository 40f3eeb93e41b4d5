import type { StaticDecode } from '@sinclair/typebox'
import type { ConfigSchema } from './schema.js'

/** Readonly all the way down (the loaded configuration is deep-frozen). */
type DeepReadonly<T> = T extends (infer U)[]
  ? readonly DeepReadonly<U>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T

type Decoded = DeepReadonly<StaticDecode<typeof ConfigSchema>>

/**
 * The validated, normalized configuration, derived from the schema (config/schema.ts: each field's
 * meaning, default and decoding is written there once): durations are milliseconds, secrets are
 * resolved, defaults are filled in, and the object is deep-frozen. Nothing below `config/` reads
 * `process.env`; everything gets this object (or a part of it).
 */
export type Config = Omit<Decoded, 'templates'> & { readonly templates: readonly TemplateConfig[] }

/**
 * One template. `upstreamHeaders` is optional here (absent or empty = none: a template built in code
 * may leave it out); a loaded configuration always has it.
 */
export type TemplateConfig = Omit<Decoded['templates'][number], 'upstreamHeaders'> & {
  readonly upstreamHeaders?: Decoded['templates'][number]['upstreamHeaders']
}

export type PathMode = TemplateConfig['pathMode']
