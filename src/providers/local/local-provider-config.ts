import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { parseDuration } from '../../domain/duration.js'
import type { IsolationSettings } from './local-isolation.js'
import { parseSubnet } from './local-network.js'
import { settingsProblems } from '../../config/explain.js'

/**
 * Per-template settings of the local provider (`templates[].settings`).
 *
 * ```yaml
 * settings:
 *   command: [node, ./src/demo-app/server.mjs, --base-path, '{{basePath}}']
 *   env: { APP_MODE: demo }
 *   stopGrace: 5s
 * ```
 * Tokens `{{port}}`, `{{basePath}}`, `{{instanceId}}`, `{{workdir}}`, `{{host}}`, `{{appToken}}`, `{{user}}`,
 * `{{sessionUrl}}` are substituted in
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
export function parseLocalTemplateSettings(
  raw: unknown,
): { settings: LocalTemplateSettings; problems: [] } | { settings: null; problems: string[] } {
  if (!Value.Check(localTemplateSettingsSchema, raw)) {
    return { settings: null, problems: settingsProblems(localTemplateSettingsSchema, raw, 'local') }
  }
  const s = raw as LocalTemplateSettingsInput
  let stopGraceMs: number = LOCAL_DEFAULTS.stopGraceMs
  if (s.stopGrace !== undefined) {
    const ms = parseDuration(s.stopGrace)
    if (ms === undefined)
      return { settings: null, problems: [`local.stopGrace: "${s.stopGrace}" is not a duration (e.g. 5000, 5s)`] }
    stopGraceMs = ms
  }
  return { settings: { command: s.command, env: s.env ?? {}, stopGraceMs, home: s.home ?? 'workdir' }, problems: [] }
}

/** Provider-wide settings (`providers.local`). */
export interface LocalProviderSettings {
  readonly keepTerminatedMs: number
  /** Where session working directories (their HOME) live; never inside the data directory (which is 0700). */
  readonly sessionsDir: string | null
  readonly isolation: IsolationSettings
}

export const localProviderSettingsSchema = Type.Object(
  {
    keepTerminated: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.String()])),
    /** `auto` (default): isolate as far as this machine allows and say what is not; `required`: refuse to run sessions otherwise. */
    isolation: Type.Optional(Type.Union([Type.Literal('auto'), Type.Literal('required')])),
    /** `first-last` uids for session accounts (one per running session); default 2000000-2099999. */
    uids: Type.Optional(Type.String({ pattern: '^\\d{1,10}-\\d{1,10}$' })),
    /** IPv4 range cut into one /30 per session (network namespaces); default 10.213.0.0/16. */
    subnet: Type.Optional(Type.String()),
    /** Session working directories; default `<dataDir>-sessions`. */
    sessionsDir: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
)

export const ISOLATION_DEFAULTS = {
  uids: '2000000-2099999', // never a system or login uid; above the usual /etc/subuid ranges
  subnet: '10.213.0.0/16', // 16384 sessions, one /30 each
} as const

/** Returns the settings, or throws with every problem (each prefixed with its path). */
export function parseLocalProviderSettings(raw: Readonly<Record<string, unknown>>): LocalProviderSettings {
  if (!Value.Check(localProviderSettingsSchema, raw)) {
    throw new Error(settingsProblems(localProviderSettingsSchema, raw, 'providers.local').join('; '))
  }
  const v = raw.keepTerminated
  const ms = typeof v === 'number' || typeof v === 'string' ? parseDuration(v) : undefined
  const [first, last] = String(raw.uids ?? ISOLATION_DEFAULTS.uids)
    .split('-')
    .map(Number) as [number, number]
  if (!(first >= 1000 && last >= first && last < 2 ** 32 - 1))
    throw new Error(`providers.local.uids: "${String(raw.uids)}" must be first-last with 1000 ≤ first ≤ last`)
  const subnetText = String(raw.subnet ?? ISOLATION_DEFAULTS.subnet)
  const subnet = parseSubnet(subnetText)
  if (!subnet)
    throw new Error(
      `providers.local.subnet: "${subnetText}" is not an IPv4 CIDR between /8 and /28 (e.g. 10.213.0.0/16)`,
    )
  return {
    keepTerminatedMs: ms ?? LOCAL_DEFAULTS.keepTerminatedMs,
    sessionsDir: typeof raw.sessionsDir === 'string' ? raw.sessionsDir : null,
    isolation: {
      mode: raw.isolation === 'required' ? 'required' : 'auto',
      uidFirst: first,
      uidCount: last - first + 1,
      subnet,
    },
  }
}
