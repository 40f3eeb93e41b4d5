import { createHash } from 'node:crypto'
import type { RunInstancesCommandInput, Tag } from '@aws-sdk/client-ec2'
import { ProviderError } from '../../domain/errors.js'
import { LABEL_INSTANCE, LABEL_POOL, LABEL_TEMPLATE, type InstanceSpec } from '../provider.js'
import { PROVIDER } from './ec2-errors.js'
import { renderUserData, USER_DATA_MAX_BYTES, type Ec2TemplateSettings } from './ec2-provider-config.js'

/**
 * What one launch sends to EC2: the RunInstances input (user data, tags, the spot market options)
 * and its idempotency token. Pure: no API call, no state.
 */

/** Label the recovery worker sets when it replaces an instance under the same instanceId. */
export const LABEL_GENERATION = 'studiopool:generation'

/** Default app port (RStudio Server). */
export const DEFAULT_PORT = 8787

export type Market = 'spot' | 'on-demand'

/**
 * The deterministic RunInstances ClientToken for one launch attempt (≤ 64 ASCII characters).
 * The same instanceId, generation and market always give the same token, so a retried or repeated
 * create never launches twice. On-demand fallback gets its own token: AWS rejects a token reused
 * with different parameters (IdempotentParameterMismatch).
 */
export function clientToken(poolId: string, instanceId: string, generation: string, market: Market, salt = ''): string {
  const pool = createHash('sha256').update(poolId).digest('hex').slice(0, 8)
  const id = /^[A-Za-z0-9_-]{1,24}$/.test(instanceId)
    ? instanceId
    : createHash('sha256').update(instanceId).digest('hex').slice(0, 24)
  const gen = /^[0-9]{1,6}$/.test(generation)
    ? generation
    : createHash('sha256').update(generation).digest('hex').slice(0, 6)
  const saltPart = salt ? `-${createHash('sha256').update(salt).digest('hex').slice(0, 8)}` : ''
  return `sp-${pool}-${id}-g${gen}-${market === 'spot' ? 's' : 'o'}${saltPart}`
}

/** Decides the resource's tags: our labels win over template tags; `Name` and `Purpose` by default. */
export function instanceTags(spec: InstanceSpec, settings: Ec2TemplateSettings): Record<string, string> {
  return {
    Name: `studiopool-${spec.template.name}-${spec.id}`,
    Purpose: spec.template.displayName || spec.template.name,
    ...settings.tags,
    ...spec.labels,
    [LABEL_POOL]: spec.poolId,
    [LABEL_INSTANCE]: spec.id,
    [LABEL_TEMPLATE]: spec.template.name,
  }
}

export function toTagList(tags: Readonly<Record<string, string>>): Tag[] {
  return Object.entries(tags).map(([Key, Value]) => ({ Key, Value }))
}

/** The user-data script of one launch, its tokens filled in; refused when over EC2's limit. */
function userDataScript(spec: InstanceSpec, settings: Ec2TemplateSettings, userData: string, region: string): string {
  const port = spec.template.port ?? DEFAULT_PORT
  const tokens: Record<string, string> = {
    ...settings.tokens,
    // The seed's ACCOUNT was the registry host; accept `account` as the registry when `registry` is unset.
    registry: settings.tokens.registry || settings.tokens.account || '',
    instanceId: spec.id,
    poolId: spec.poolId,
    template: spec.template.name,
    progressUrl: spec.progressUrl,
    progressToken: spec.progressToken,
    port: String(port),
    region,
    basePath: spec.basePath,
  }
  const script = renderUserData(userData, tokens)
  if (Buffer.byteLength(script) > USER_DATA_MAX_BYTES) {
    throw new ProviderError(
      PROVIDER,
      `rendered user data for template ${spec.template.name} is over ${USER_DATA_MAX_BYTES} bytes`,
      { retryable: false },
    )
  }
  return script
}

/** One-time spot, terminated on interruption; the template's maximum price when it sets one. */
function spotOptions(settings: Ec2TemplateSettings): RunInstancesCommandInput['InstanceMarketOptions'] {
  return {
    MarketType: 'spot',
    SpotOptions: {
      SpotInstanceType: 'one-time',
      InstanceInterruptionBehavior: 'terminate',
      ...(settings.spot.maxPrice ? { MaxPrice: settings.spot.maxPrice } : {}),
    },
  }
}

/** The RunInstances input for one attempt. */
export function runInstancesInput(
  spec: InstanceSpec,
  launch: { readonly settings: Ec2TemplateSettings; readonly userData: string; readonly region: string },
  market: Market,
  salt = '',
): RunInstancesCommandInput {
  const { settings } = launch
  const script = userDataScript(spec, settings, launch.userData, launch.region)
  const tags = toTagList(instanceTags(spec, settings))
  const input: RunInstancesCommandInput = {
    ImageId: settings.imageId,
    InstanceType: settings.instanceType as RunInstancesCommandInput['InstanceType'],
    MinCount: 1,
    MaxCount: 1,
    SecurityGroupIds: [...settings.securityGroupIds],
    UserData: Buffer.from(script, 'utf8').toString('base64'),
    TagSpecifications: [
      { ResourceType: 'instance', Tags: tags },
      { ResourceType: 'volume', Tags: tags },
    ],
    ClientToken: clientToken(spec.poolId, spec.id, spec.labels[LABEL_GENERATION] ?? '0', market, salt),
  }
  if (settings.keyName) input.KeyName = settings.keyName
  if (settings.subnetId) input.SubnetId = settings.subnetId
  if (settings.iamInstanceProfile) {
    input.IamInstanceProfile = settings.iamInstanceProfile.startsWith('arn:')
      ? { Arn: settings.iamInstanceProfile }
      : { Name: settings.iamInstanceProfile }
  }
  if (settings.volumeSize !== undefined) {
    input.BlockDeviceMappings = [
      {
        DeviceName: settings.rootDeviceName,
        Ebs: { VolumeSize: settings.volumeSize, VolumeType: settings.volumeType as 'gp3', DeleteOnTermination: true },
      },
    ]
  }
  if (market === 'spot') input.InstanceMarketOptions = spotOptions(settings)
  return input
}
