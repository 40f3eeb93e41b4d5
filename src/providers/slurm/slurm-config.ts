import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { parseDuration } from '../../domain/duration.js'
import { settingsProblems } from '../../config/explain.js'

/**
 * Settings of the `slurm` provider: provider-wide (`providers.slurm`) and per template (`slurm:`).
 * Every key is described in docs/slurm.md.
 */
const DurationIn = Type.Union([Type.Integer({ minimum: 0 }), Type.String()])
const Account = Type.String({ pattern: '^(\\{\\{user\\}\\}|[a-z_][a-z0-9_.-]{0,31})$' })

export const slurmTemplateSettingsSchema = Type.Object(
  {
    /** The app's part of the job script (bash); tokens as in local templates; `{{port}}`/`{{host}}` are the job's own. */
    script: Type.String({ minLength: 1, maxLength: 65_536 }),
    partition: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.,-]{1,128}$' })),
    account: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,128}$' })),
    qos: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,128}$' })),
    /** Walltime; default the template's maxLifetime (plus a minute), else the partition's default. */
    time: Type.Optional(DurationIn),
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    /** `--mem`, e.g. `4G`. */
    memory: Type.Optional(Type.String({ pattern: '^\\d+[KMGT]?$' })),
    gres: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_:,.-]{1,256}$' })),
    constraint: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_&|!,.()\\[\\]*-]{1,256}$' })),
    /** More `sbatch` options, each one argv element starting with `--`. */
    extraArgs: Type.Optional(Type.Array(Type.String({ pattern: '^--[a-z][a-z0-9-]*(=.*)?$' }), { maxItems: 50 })),
    /** The account the job runs as: `{{user}}` (default, the session's owner) or a fixed account name. */
    user: Type.Optional(Account),
    /** The account warm (not yet claimed) instances run as; without it warm instances are refused. */
    warmUser: Type.Optional(Account),
    /** Ports the job may bind, `first-last`; default 20000-29999. */
    portRange: Type.Optional(Type.String({ pattern: '^\\d{1,5}-\\d{1,5}$' })),
    /** Shell command printing the host the gateway reaches the job at; default `hostname -f`. */
    hostCommand: Type.Optional(Type.String({ minLength: 1, maxLength: 1000 })),
    /** The job's working directory (`sbatch -D`); tokens allowed; default `/tmp`. */
    workdir: Type.Optional(Type.String({ minLength: 1, maxLength: 1000 })),
    /** `sbatch --output`; default `/dev/null`. */
    output: Type.Optional(Type.String({ minLength: 1, maxLength: 1000 })),
  },
  { additionalProperties: false },
)
type TemplateIn = Static<typeof slurmTemplateSettingsSchema>

export interface SlurmTemplateSettings {
  readonly script: string
  readonly partition: string | null
  readonly account: string | null
  readonly qos: string | null
  /** Whole minutes; null: the partition's default. */
  readonly timeMinutes: number | null
  readonly cpus: number | null
  readonly memory: string | null
  readonly gres: string | null
  readonly constraint: string | null
  readonly extraArgs: readonly string[]
  readonly user: string
  readonly warmUser: string | null
  readonly portFirst: number
  readonly portLast: number
  readonly hostCommand: string
  readonly workdir: string
  readonly output: string
}

export const SLURM_DEFAULTS = {
  portRange: '20000-29999',
  hostCommand: 'hostname -f',
  workdir: '/tmp',
  output: '/dev/null',
  /** A running job with less walltime than this left says so in its message. */
  walltimeWarningMs: 600_000, // 10 minutes
  commandTimeoutMs: 30_000,
  /** The newest squeue answer is reused this long (± 20 % jitter): at most one query per cycle. */
  pollIntervalMs: 4_000,
  /** A job squeue no longer shows keeps its last state this long before it counts as gone. */
  lostGraceMs: 600_000,
} as const

type Parsed<T> = { settings: T; problems: [] } | { settings: null; problems: string[] }

function schemaProblems(schema: Parameters<typeof Value.Errors>[0], raw: unknown, prefix: string): string[] {
  return settingsProblems(schema, raw, prefix)
}

/** Whole minutes of a duration, rounded up; undefined when not a duration. */
function minutes(v: number | string): number | undefined {
  const ms = parseDuration(v)
  return ms === undefined ? undefined : Math.max(1, Math.ceil(ms / 60_000))
}

/** The template's settings, or its problems; `maxLifetimeMs` gives the default walltime. */
export function parseSlurmTemplateSettings(raw: unknown, maxLifetimeMs = 0): Parsed<SlurmTemplateSettings> {
  if (!Value.Check(slurmTemplateSettingsSchema, raw))
    return { settings: null, problems: schemaProblems(slurmTemplateSettingsSchema, raw, 'slurm') }
  const s = raw as TemplateIn
  const problems: string[] = []
  let timeMinutes: number | null = maxLifetimeMs > 0 ? Math.ceil(maxLifetimeMs / 60_000) + 1 : null
  if (s.time !== undefined) {
    const m = minutes(s.time)
    if (m === undefined) problems.push(`slurm.time: "${s.time}" is not a duration (e.g. 8h)`)
    else timeMinutes = m
  }
  const [first, last] = (s.portRange ?? SLURM_DEFAULTS.portRange).split('-').map(Number) as [number, number]
  if (!(first >= 1024 && last >= first && last <= 65535))
    problems.push(`slurm.portRange: "${s.portRange}" must be first-last with 1024 ≤ first ≤ last ≤ 65535`)
  if (problems.length) return { settings: null, problems }
  return {
    settings: {
      script: s.script,
      partition: s.partition ?? null,
      account: s.account ?? null,
      qos: s.qos ?? null,
      timeMinutes,
      cpus: s.cpus ?? null,
      memory: s.memory ?? null,
      gres: s.gres ?? null,
      constraint: s.constraint ?? null,
      extraArgs: s.extraArgs ?? [],
      user: s.user ?? '{{user}}',
      warmUser: s.warmUser ?? null,
      portFirst: first,
      portLast: last,
      hostCommand: s.hostCommand ?? SLURM_DEFAULTS.hostCommand,
      workdir: s.workdir ?? SLURM_DEFAULTS.workdir,
      output: s.output ?? SLURM_DEFAULTS.output,
    },
    problems: [],
  }
}

export const slurmProviderSettingsSchema = Type.Object(
  {
    /** Run the Slurm commands there over `ssh` (as Open OnDemand's submit_host); default: on this machine. */
    submitHost: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.@-]{1,255}$' })),
    /** Extra `ssh` options (e.g. `-i`, `-o BatchMode=yes`), each one argv element. */
    sshArgs: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { maxItems: 30 })),
    /** Directory holding sbatch, squeue, scancel, scontrol; default: found on PATH. */
    binDir: Type.Optional(Type.String({ minLength: 1 })),
    /** How accounts are switched: `uid` (`sbatch --uid/--gid`, needs root), `prefix` (`submitPrefix`), `none` (submit as the server's account, never root). */
    runAs: Type.Optional(Type.Union([Type.Literal('uid'), Type.Literal('prefix'), Type.Literal('none')])),
    /** With runAs `prefix`: argv put before sbatch, `{{user}}` replaced; e.g. [sudo, -n, -u, '{{user}}', --]. */
    submitPrefix: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1, maxItems: 20 })),
    commandTimeout: Type.Optional(DurationIn),
    pollInterval: Type.Optional(DurationIn),
    lostGrace: Type.Optional(DurationIn),
    /** The cluster allows `scontrol suspend/resume` (and hold/release) from this account: stop/start supported. */
    suspend: Type.Optional(Type.Boolean()),
    /**
     * Also take the address a job appends to its comment (`addr=host:port`, when it cannot reach the
     * server's callback), checked as the callback's is; default true.
     */
    addressFromComment: Type.Optional(Type.Boolean()),
    /** Extra environment for the Slurm commands (e.g. SLURM_CONF). */
    env: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Z_][A-Z0-9_]*$' }), Type.String())),
  },
  { additionalProperties: false },
)
type ProviderIn = Static<typeof slurmProviderSettingsSchema>

export interface SlurmProviderSettings {
  readonly submitHost: string | null
  readonly sshArgs: readonly string[]
  readonly binDir: string | null
  readonly runAs: 'uid' | 'prefix' | 'none'
  readonly submitPrefix: readonly string[]
  readonly commandTimeoutMs: number
  readonly pollIntervalMs: number
  readonly lostGraceMs: number
  readonly suspend: boolean
  readonly addressFromComment: boolean
  readonly env: Readonly<Record<string, string>>
}

/** Returns the settings, or throws with every problem (each prefixed with its path). */
export function parseSlurmProviderSettings(raw: Readonly<Record<string, unknown>>): SlurmProviderSettings {
  if (!Value.Check(slurmProviderSettingsSchema, raw))
    throw new Error(schemaProblems(slurmProviderSettingsSchema, raw, 'providers.slurm').join('; '))
  const s = raw as ProviderIn
  const dur = (key: 'commandTimeout' | 'pollInterval' | 'lostGrace', dflt: number): number => {
    const v = s[key]
    if (v === undefined) return dflt
    const ms = parseDuration(v)
    if (ms === undefined) throw new Error(`providers.slurm.${key}: "${v}" is not a duration (e.g. 30s)`)
    return ms
  }
  const runAs = s.runAs ?? (process.getuid?.() === 0 ? 'uid' : 'none')
  if (runAs === 'prefix' && !s.submitPrefix)
    throw new Error('providers.slurm.submitPrefix: required with runAs: prefix (e.g. [sudo, -n, -u, "{{user}}", --])')
  return {
    submitHost: s.submitHost ?? null,
    sshArgs: s.sshArgs ?? [],
    binDir: s.binDir ?? null,
    runAs,
    submitPrefix: s.submitPrefix ?? [],
    commandTimeoutMs: dur('commandTimeout', SLURM_DEFAULTS.commandTimeoutMs),
    pollIntervalMs: dur('pollInterval', SLURM_DEFAULTS.pollIntervalMs),
    lostGraceMs: dur('lostGrace', SLURM_DEFAULTS.lostGraceMs),
    suspend: s.suspend ?? false,
    addressFromComment: s.addressFromComment ?? true,
    env: s.env ?? {},
  }
}
