import type { StaticDecode } from '@sinclair/typebox'
import type { SharedSettings } from '../domain/shared.js'
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

type DecodedTemplate = Decoded['templates'][number]

/**
 * One template. `upstreamHeaders`, `schedule` and `warmPool` are optional here (absent = none: a
 * template built in code may leave them out); a loaded configuration always has them (null = none).
 */
export type TemplateConfig = Omit<
  DecodedTemplate,
  'upstreamHeaders' | 'price' | 'resources' | 'schedule' | 'warmPool' | 'shared'
> & {
  readonly upstreamHeaders?: DecodedTemplate['upstreamHeaders']
  /** docs/cost.md "Prices"; absent (a template built in code): `pricePerHour` and the price book decide. */
  readonly price?: DecodedTemplate['price']
  readonly resources?: DecodedTemplate['resources']
  readonly schedule?: DecodedTemplate['schedule']
  readonly warmPool?: DecodedTemplate['warmPool']
  /** `mode: shared` (issue 14); absent or null = dedicated (a template built in code may leave it out). */
  readonly shared?: SharedSettings | null
}

export type PathMode = TemplateConfig['pathMode']
