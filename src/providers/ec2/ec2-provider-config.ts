import { readFileSync, statSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { settingsProblems } from '../../config/explain.js'

/**
 * Settings of the `ec2` provider (architecture.md conventions: each provider owns its sub-schema).
 *
 * Provider-wide settings live under `providers.ec2` in studiopool.yaml; per-template settings under
 * `templates[].settings`. Region and credentials come from the standard AWS chain; `region` here is
 * only an override. Nothing here is a secret.
 */

const AddressFrom = Type.Union([Type.Literal('private-ip'), Type.Literal('public-dns'), Type.Literal('public-ip')])

export const Ec2ProviderSettingsSchema = Type.Object(
  {
    /** Overrides the SDK chain (AWS_REGION, the profile's region). */
    region: Type.Optional(Type.String({ pattern: '^[a-z]{2}(-[a-z]+)+-[0-9]+$' })),
    /** Which address the gateway uses to reach an instance. private-ip suits a gateway in the same VPC. */
    addressFrom: Type.Optional(AddressFrom),
    /** Retries after the first attempt for throttling, 5xx and network errors. */
    maxRetries: Type.Optional(Type.Integer({ minimum: 0, maximum: 10 })),
    /** Backoff base and cap, milliseconds ("full jitter"). */
    retryBaseDelayMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 60_000 })),
    retryMaxDelayMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 300_000 })),
    /** Instance ids per DescribeInstances call (AWS accepts up to 1000; 200 keeps responses small). */
    describeBatchSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  },
  { additionalProperties: false },
)
export type Ec2ProviderSettingsInput = Static<typeof Ec2ProviderSettingsSchema>

export interface Ec2ProviderSettings {
  readonly region: string | undefined
  readonly addressFrom: 'private-ip' | 'public-dns' | 'public-ip'
  readonly maxRetries: number
  readonly retryBaseDelayMs: number
  readonly retryMaxDelayMs: number
  readonly describeBatchSize: number
}

export const EC2_PROVIDER_DEFAULTS = {
  addressFrom: 'private-ip',
  maxRetries: 5, // 6 attempts in all
  retryBaseDelayMs: 250, // 0.25 seconds
  retryMaxDelayMs: 20_000, // 20 seconds
  describeBatchSize: 200,
} as const

const TOKEN_NAME = '^[A-Za-z][A-Za-z0-9_]*$'

export const Ec2TemplateSettingsSchema = Type.Object(
  {
    imageId: Type.String({ pattern: '^ami-[0-9a-f]{8,17}$' }),
    instanceType: Type.String({ pattern: '^[a-z0-9-]+\\.[a-z0-9-]+$' }),
    keyName: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    /** Required: the group must let only the gateway reach the app port (docs/aws.md). */
    securityGroupIds: Type.Array(Type.String({ pattern: '^sg-[0-9a-f]{8,17}$' }), { minItems: 1, maxItems: 16 }),
    subnetId: Type.Optional(Type.String({ pattern: '^subnet-[0-9a-f]{8,17}$' })),
    /** Instance profile name, or its ARN (`arn:aws:iam::…:instance-profile/…`). */
    iamInstanceProfile: Type.Optional(Type.String({ minLength: 1, maxLength: 2048 })),
    /** Root volume size, GiB. Without it the AMI's own root volume size is used. */
    volumeSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 16_384 })),
    /** Root device name of the AMI: `/dev/sda1` for Ubuntu (the seed's AMI), `/dev/xvda` for Amazon Linux. */
    rootDeviceName: Type.Optional(Type.String({ pattern: '^/dev/[a-z0-9]+$' })),
    volumeType: Type.Optional(
      Type.Union(['gp3', 'gp2', 'io1', 'io2', 'st1', 'sc1', 'standard'].map((v) => Type.Literal(v))),
    ),
    /** Path to the user-data template; relative paths resolve against the working directory. */
    userDataTemplate: Type.Optional(Type.String({ minLength: 1 })),
    /** Extra `{{{token}}}` values for the user data (e.g. `registry`, `image`). */
    tokens: Type.Optional(Type.Record(Type.String({ pattern: TOKEN_NAME }), Type.String({ maxLength: 4096 }))),
    spot: Type.Optional(
      Type.Object(
        {
          enabled: Type.Boolean(),
          /** USD per hour, as AWS writes it ("0.0116"). Without it, the on-demand price caps the bid. */
          maxPrice: Type.Optional(Type.String({ pattern: '^[0-9]+(\\.[0-9]+)?$' })),
          /** Launch on-demand when spot has no capacity (default true). */
          fallbackToOnDemand: Type.Optional(Type.Boolean()),
        },
        { additionalProperties: false },
      ),
    ),
    /** Extra tags on the instance and its volumes, e.g. `Purpose: RStudio`. */
    tags: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 128 }), Type.String({ maxLength: 256 }))),
    /** Per-template override of the provider's `addressFrom`. */
    addressFrom: Type.Optional(AddressFrom),
  },
  { additionalProperties: false },
)
export type Ec2TemplateSettingsInput = Static<typeof Ec2TemplateSettingsSchema>

export interface Ec2TemplateSettings {
  readonly imageId: string
  readonly instanceType: string
  readonly keyName: string | undefined
  readonly securityGroupIds: readonly string[]
  readonly subnetId: string | undefined
  readonly iamInstanceProfile: string | undefined
  readonly volumeSize: number | undefined
  readonly rootDeviceName: string
  readonly volumeType: string
  /** Absolute path. */
  readonly userDataTemplate: string
  readonly tokens: Readonly<Record<string, string>>
  readonly spot: {
    readonly enabled: boolean
    readonly maxPrice: string | undefined
    readonly fallbackToOnDemand: boolean
  }
  readonly tags: Readonly<Record<string, string>>
  readonly addressFrom: 'private-ip' | 'public-dns' | 'public-ip' | undefined
}

/** The shipped RStudio user data (`examples/rstudio/user-data.sh`), found from this file in src/ or dist/. */
export const DEFAULT_USER_DATA_TEMPLATE = fileURLToPath(
  new URL('../../../examples/rstudio/user-data.sh', import.meta.url),
)

/**
 * Tokens studiopool fills in per instance; config `tokens` may not override them.
 * `registry` and `image` are ordinary tokens with defaults (the seed pulled `${ACCOUNT}/rstudio`).
 */
export const BUILTIN_TOKENS = [
  'instanceId',
  'poolId',
  'template',
  'progressUrl',
  'progressToken',
  'port',
  'region',
  'basePath',
] as const
export const DEFAULT_TOKENS: Readonly<Record<string, string>> = { registry: '', image: 'rstudio' }

/** EC2's limit on user data, before base64. */
export const USER_DATA_MAX_BYTES = 16 * 1024

/** Reserved tag prefixes: AWS's own, and ours (the labels must not be overridden by a template). */
const RESERVED_TAG_PREFIXES = ['aws:', 'studiopool:']

function schemaProblems(schema: TSchema, value: unknown, prefix: string): string[] {
  return settingsProblems(schema, value, prefix, true)
}

export function parseProviderSettings(raw: Readonly<Record<string, unknown>> | undefined): {
  settings?: Ec2ProviderSettings
  problems: string[]
} {
  const value = raw ?? {}
  const problems = schemaProblems(Ec2ProviderSettingsSchema, value, 'providers.ec2')
  if (problems.length) return { problems }
  const v = value as Ec2ProviderSettingsInput
  const settings: Ec2ProviderSettings = {
    region: v.region,
    addressFrom: v.addressFrom ?? EC2_PROVIDER_DEFAULTS.addressFrom,
    maxRetries: v.maxRetries ?? EC2_PROVIDER_DEFAULTS.maxRetries,
    retryBaseDelayMs: v.retryBaseDelayMs ?? EC2_PROVIDER_DEFAULTS.retryBaseDelayMs,
    retryMaxDelayMs: v.retryMaxDelayMs ?? EC2_PROVIDER_DEFAULTS.retryMaxDelayMs,
    describeBatchSize: v.describeBatchSize ?? EC2_PROVIDER_DEFAULTS.describeBatchSize,
  }
  return { settings, problems: [] }
}

/** `{{{ name }}}` occurrences; a name that is not a valid token name is reported as is. */
export const TOKEN_RE = /\{\{\{([^{}]*)\}\}\}/g

export function tokensIn(text: string): string[] {
  return [...new Set([...text.matchAll(TOKEN_RE)].map((m) => m[1]!.trim()))]
}

export function parseTemplateSettings(
  templateName: string,
  raw: Readonly<Record<string, unknown>> | undefined,
): { settings?: Ec2TemplateSettings; problems: string[] } {
  const prefix = `templates.${templateName}.settings`
  const value = raw ?? {}
  const problems = schemaProblems(Ec2TemplateSettingsSchema, value, prefix)
  if (problems.length) return { problems }
  const v = value as Ec2TemplateSettingsInput
  for (const key of Object.keys(v.tokens ?? {})) {
    if ((BUILTIN_TOKENS as readonly string[]).includes(key))
      problems.push(`${prefix}/tokens/${key}: "${key}" is set by studiopool for each instance and cannot be configured`)
  }
  for (const key of Object.keys(v.tags ?? {})) {
    if (RESERVED_TAG_PREFIXES.some((p) => key.toLowerCase().startsWith(p)))
      problems.push(`${prefix}/tags/${key}: tag keys starting with ${RESERVED_TAG_PREFIXES.join(' or ')} are reserved`)
  }
  if (Object.keys(v.tags ?? {}).length > 40)
    problems.push(`${prefix}/tags: at most 40 tags (AWS allows 50, studiopool uses some)`)
  if (v.spot?.maxPrice !== undefined && !v.spot.enabled)
    problems.push(`${prefix}/spot/maxPrice: set, but spot.enabled is false`)
  if (problems.length) return { problems }
  const settings: Ec2TemplateSettings = {
    imageId: v.imageId,
    instanceType: v.instanceType,
    keyName: v.keyName,
    securityGroupIds: [...v.securityGroupIds],
    subnetId: v.subnetId,
    iamInstanceProfile: v.iamInstanceProfile,
    volumeSize: v.volumeSize,
    rootDeviceName: v.rootDeviceName ?? '/dev/sda1',
    volumeType: v.volumeType ?? 'gp3',
    userDataTemplate: v.userDataTemplate
      ? isAbsolute(v.userDataTemplate)
        ? v.userDataTemplate
        : resolve(v.userDataTemplate)
      : DEFAULT_USER_DATA_TEMPLATE,
    tokens: { ...DEFAULT_TOKENS, ...(v.tokens ?? {}) },
    spot: {
      enabled: v.spot?.enabled ?? false,
      maxPrice: v.spot?.maxPrice,
      fallbackToOnDemand: v.spot?.fallbackToOnDemand ?? true,
    },
    tags: { ...(v.tags ?? {}) },
    addressFrom: v.addressFrom,
  }
  return { settings, problems: [] }
}

/**
 * Reads the user-data template and checks it: present, within EC2's size limit, and every
 * `{{{token}}}` known (built-in or configured). Returns the text, or problems.
 */
export function loadUserDataTemplate(
  settings: Ec2TemplateSettings,
  templateName: string,
): { text?: string; problems: string[] } {
  const where = `templates.${templateName}.settings/userDataTemplate`
  let text: string
  try {
    const st = statSync(settings.userDataTemplate)
    if (!st.isFile()) return { problems: [`${where}: ${settings.userDataTemplate} is not a file`] }
    if (st.size > USER_DATA_MAX_BYTES)
      return {
        problems: [
          `${where}: ${settings.userDataTemplate} is ${st.size} bytes; EC2 accepts at most ${USER_DATA_MAX_BYTES}`,
        ],
      }
    text = readFileSync(settings.userDataTemplate, 'utf8')
  } catch (err) {
    return {
      problems: [
        `${where}: cannot read ${settings.userDataTemplate}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      ],
    }
  }
  const known = new Set<string>([...BUILTIN_TOKENS, ...Object.keys(settings.tokens)])
  const problems: string[] = []
  for (const name of tokensIn(text)) {
    if (!new RegExp(TOKEN_NAME).test(name)) problems.push(`${where}: "{{{${name}}}}" is not a valid token name`)
    else if (!known.has(name))
      problems.push(
        `${where}: unknown token {{{${name}}}} (known: ${[...known].sort().join(', ')}; add it under settings.tokens)`,
      )
  }
  return problems.length ? { problems } : { text, problems }
}

/**
 * Replaces every `{{{token}}}`. Per-instance values are checked for characters that could break
 * out of the single quotes the shipped script puts them in (they come from us, but the check is cheap).
 */
export function renderUserData(text: string, tokens: Readonly<Record<string, string>>): string {
  for (const name of BUILTIN_TOKENS) {
    const v = tokens[name]
    if (v !== undefined && /['\n\r\0\\`$]/.test(v))
      throw new Error(`user-data token ${name} has a character that is not allowed in a shell string`)
  }
  return text.replace(TOKEN_RE, (whole, rawName: string) => {
    const name = rawName.trim()
    const v = tokens[name]
    if (v === undefined) throw new Error(`unknown user-data token {{{${name}}}}`)
    return v
  })
}

/**
 * Problems with one template's ec2 settings and its user-data template (schema, file, unknown
 * tokens); empty when fine. Needs no provider instance, so config validation can call it at start.
 */
export function validateTemplate(template: {
  readonly name: string
  readonly settings: Readonly<Record<string, unknown>>
}): string[] {
  const parsed = parseTemplateSettings(template.name, template.settings)
  if (!parsed.settings) return parsed.problems
  return loadUserDataTemplate(parsed.settings, template.name).problems
}
