import type { Instance as Ec2Instance } from '@aws-sdk/client-ec2'
import type { TemplateConfig } from '../../config/types.js'
import { LABEL_INSTANCE, LABEL_TEMPLATE, type ProviderInstance } from '../provider.js'
import { DEFAULT_PORT } from './ec2-launch.js'
import type { Ec2ProviderSettings } from './ec2-provider-config.js'

/** How an EC2 instance reads as a provider instance: its state, address, labels and message. */

/** States in which an instance holds capacity and may be returned by an idempotent create. */
export const LIVE_EC2_STATES = ['pending', 'running', 'stopping', 'stopped']

export const EC2_ID_RE = /^i-[0-9a-f]{8}(?:[0-9a-f]{9})?$/

export function tagsOf(inst: Ec2Instance): Record<string, string> {
  const out: Record<string, string> = {}
  for (const t of inst.Tags ?? []) if (t.Key !== undefined) out[t.Key] = t.Value ?? ''
  return out
}

export function mapState(name: string | undefined): ProviderInstance['state'] {
  switch (name) {
    case 'pending':
      return 'pending'
    case 'running':
      return 'running'
    // A stopping instance no longer serves; it will be `stopped` (suspended) in a moment.
    case 'stopping':
    case 'stopped':
      return 'stopped'
    // shutting-down, terminated, and anything unknown: gone or going.
    default:
      return 'terminated'
  }
}

/**
 * `template` is the instance's template when known (it gives the port); `addressFrom` the
 * template's setting, else the provider's.
 */
export function toProviderInstance(
  inst: Ec2Instance,
  template: TemplateConfig | undefined,
  addressFrom: Ec2ProviderSettings['addressFrom'],
): ProviderInstance {
  const labels = tagsOf(inst)
  const stateName = inst.State?.Name
  const host =
    addressFrom === 'public-dns'
      ? inst.PublicDnsName
      : addressFrom === 'public-ip'
        ? inst.PublicIpAddress
        : inst.PrivateIpAddress
  const port = template?.port ?? DEFAULT_PORT
  const reason = inst.StateReason?.Message
  const spot = inst.InstanceLifecycle === 'spot' ? ' (spot)' : ''
  const base: ProviderInstance = {
    ref: inst.InstanceId ?? '',
    instanceId: labels[LABEL_INSTANCE] ?? '',
    template: labels[LABEL_TEMPLATE] ?? '',
    state: mapState(stateName),
    address: host && stateName !== 'terminated' && stateName !== 'shutting-down' ? `http://${host}:${port}` : null,
    labels,
    createdAt: inst.LaunchTime ? new Date(inst.LaunchTime).getTime() : null,
    message: `EC2 instance ${stateName ?? 'unknown'}${spot}${reason && stateName !== 'running' && stateName !== 'pending' ? `: ${reason}` : ''}`,
  }
  // Only a small hint while EC2 boots the machine; the instance itself reports the rest (user data).
  return stateName === 'pending' ? { ...base, progress: 5 } : base
}
