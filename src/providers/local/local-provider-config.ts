import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { parseDuration } from '../../domain/duration.js'

/**
 * Per-template settings of the local provider (`templates[].settings`).
 *
 * ```yaml
 * settings:
 *   command: [node, ./src/demo-app/server.mjs, --base-path, '{{basePath}}']
 *   env: { APP_MODE: demo }
 *   stopGrace: 5s
 * ```
 * Tokens `{{port}}`, `{{basePath}}`, `{{instanceId}}`, `{{workdir}}`, `{{host}}` are substituted in
 * every argv element and env value. `node` as the program means the server's own Node binary.
 */
export const localTemplateSettingsSchema = Type.Object(
  {
    /** argv; the first element is looked up on PATH unless it contains a `/`. */
    command: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
    /** Extra environment for the process (besides PATH/locale, PORT, BASE_PATH, STUDIOPOOL_*). */
    env: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.String())),
    /** How long to wait after SIGTERM before SIGKILL: milliseconds or a duration such as `5s`. Default 5000 ms. */
    stopGrace: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.String()])),
    /** HOME of the process: its working directory (default) or the server's own HOME. */
    home: Type.Optional(Type.Union([Type.Literal('workdir'), Type.Literal('inherit')])),
  },
  { additionalProperties: false },
)
export type LocalTemplateSettingsInput = Static<typeof localTemplateSettingsSchema>

/** Normalized settings. */
export interface LocalTemplateSettings {
  readonly command: readonly string[]
  readonly env: Readonly<Record<string, string>>
  /** Milliseconds. */
  readonly stopGraceMs: number
  readonly home: 'workdir' | 'inherit'
}

export const LOCAL_DEFAULTS = {
  stopGraceMs: 5000, // 5 seconds between SIGTERM and SIGKILL
  /** Terminated instance directories (with their output.log) are removed this long after destroy. */
  keepTerminatedMs: 86_400_000, // 24 hours
} as const

/** Returns the settings, or the list of problems (each prefixed with its path). */
export function parseLocalTemplateSettings(raw: unknown): { settings: LocalTemplateSettings; problems: [] } | { settings: null; problems: string[] } {
  if (!Value.Check(localTemplateSettingsSchema, raw)) {
    const problems = [...Value.Errors(localTemplateSettingsSchema, raw)].map((e) => `settings${e.path.replaceAll('/', '.')}: ${e.message}`)
    return { settings: null, problems: problems.length ? problems : ['settings: invalid'] }
  }
  const s = raw as LocalTemplateSettingsInput
  let stopGraceMs: number = LOCAL_DEFAULTS.stopGraceMs
  if (s.stopGrace !== undefined) {
    const ms = parseDuration(s.stopGrace)
    if (ms === undefined) return { settings: null, problems: [`settings.stopGrace: "${s.stopGrace}" is not a duration (e.g. 5000, 5s)`] }
    stopGraceMs = ms
  }
  return { settings: { command: s.command, env: s.env ?? {}, stopGraceMs, home: s.home ?? 'workdir' }, problems: [] }
}

/** Provider-wide settings (`providers.local`). */
export interface LocalProviderSettings {
  readonly keepTerminatedMs: number
}

export const localProviderSettingsSchema = Type.Object(
  { keepTerminated: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.String()])) },
  { additionalProperties: true },
)

export function parseLocalProviderSettings(raw: Readonly<Record<string, unknown>>): LocalProviderSettings {
  const v = raw.keepTerminated
  const ms = typeof v === 'number' || typeof v === 'string' ? parseDuration(v) : undefined
  return { keepTerminatedMs: ms ?? LOCAL_DEFAULTS.keepTerminatedMs }
}
