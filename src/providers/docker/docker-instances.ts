/** Docker containers as studiopool's ProviderInstance: state, address, labels and the reason a container ended. */
import { LABEL_INSTANCE, LABEL_TEMPLATE, type ProviderInstance } from '../provider.js'
import type { ContainerInspect, ContainerSummary } from './docker-client.js'
import type { HostState } from './docker-hosts.js'
import { fromDockerLabels, SUSPENDED_SUFFIX } from './docker-labels.js'
import { DOCKER_DEFAULTS } from './docker-provider-config.js'

/** A container from the daemon's list (`detail`: its inspect, for the reason it ended). */
export function summaryToInstance(
  h: HostState,
  c: ContainerSummary,
  detail: ContainerInspect | null,
): ProviderInstance {
  const labels = fromDockerLabels(c.Labels)
  const port = (c.Ports ?? []).find((p) => p.PublicPort && p.Type === 'tcp')
  const suspended = c.Names.some((n) => n.endsWith(SUSPENDED_SUFFIX))
  const state = mapState(c.State, suspended)
  const message = state === 'terminated' ? exitReason(c.State, detail) : undefined
  return {
    ref: `${h.host.name}/${c.Id}`,
    instanceId: labels[LABEL_INSTANCE] ?? '',
    template: labels[LABEL_TEMPLATE] ?? '',
    state,
    address: state === 'running' && port ? `http://${formatHost(h.host.address)}:${port.PublicPort}` : null,
    labels,
    createdAt: c.Created * 1000,
    ...(message ? { message } : {}),
  }
}

/** A container from an inspect; remembered as last seen on its host. */
export function inspectToInstance(h: HostState, c: ContainerInspect): ProviderInstance {
  const labels = fromDockerLabels(c.Config.Labels)
  const binding = Object.values(c.NetworkSettings.Ports ?? {}).flatMap((b) => b ?? [])[0]
  const state = mapState(c.State.Status, c.Name.endsWith(SUSPENDED_SUFFIX))
  const message = state === 'terminated' ? exitReason(c.State.Status, c) : undefined
  const inst: ProviderInstance = {
    ref: `${h.host.name}/${c.Id}`,
    instanceId: labels[LABEL_INSTANCE] ?? '',
    template: labels[LABEL_TEMPLATE] ?? '',
    state,
    address: state === 'running' && binding ? `http://${formatHost(h.host.address)}:${binding.HostPort}` : null,
    labels,
    createdAt: Date.parse(c.Created) || null,
    ...(message ? { message } : {}),
  }
  h.lastSeen.set(inst.ref, inst)
  return inst
}

export function isLiveState(state: string): boolean {
  return state === 'running' || state === 'created' || state === 'restarting' || state === 'paused'
}

export function mapState(state: string, suspended: boolean): ProviderInstance['state'] {
  switch (state) {
    case 'running':
      return 'running'
    case 'created':
    case 'restarting':
      return 'pending'
    case 'paused':
      return 'stopped'
    case 'exited':
      return suspended ? 'stopped' : 'terminated'
    // dead, removing, and anything unknown: gone or going.
    default:
      return 'terminated'
  }
}

/** Why a container is no longer running, in words the user can read on the session's page. */
export function exitReason(state: string, c: ContainerInspect | null): string {
  if (!c) return `the container is ${state}`
  const s = c.State
  if (s.OOMKilled) {
    const limit = c.HostConfig.Memory ? ` (memory limit ${Math.round(c.HostConfig.Memory / 1024 / 1024)} MiB)` : ''
    return `the container was killed: out of memory${limit}`
  }
  if (s.Error) return `the container failed: ${s.Error.slice(0, 300)}`
  if (s.ExitCode > 128) {
    const sig = s.ExitCode - 128
    return `the container was killed by signal ${sig}${sig === 9 ? ' (SIGKILL)' : sig === 15 ? ' (SIGTERM)' : ''}`
  }
  return `the container exited with code ${s.ExitCode}`
}

export function isRootUser(user: string | undefined): boolean {
  const name = (user ?? '').split(':')[0]!.trim()
  return name === '' || name === 'root' || name === '0'
}

export function stopGraceOf(c: ContainerInspect): number {
  const t = c.Config.StopTimeout
  return typeof t === 'number' ? t * 1000 : DOCKER_DEFAULTS.stopGraceMs
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
}
