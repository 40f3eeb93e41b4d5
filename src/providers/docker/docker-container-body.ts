/** The `POST /containers/create` body of a session (template settings, tokens, identity, limits). */
import { LABEL_INSTANCE, LABEL_POOL, LABEL_TEMPLATE, type InstanceSpec } from '../provider.js'
import type { DockerHost, DockerTemplateSettings } from './docker-provider-config.js'
import { userSlug } from './docker-provider-config.js'
import { baseTokens, identityEnv, substitute } from '../session-env.js'
import { DOCKER_LABEL_CPUS, DOCKER_LABEL_MEMORY, toDockerLabelKey } from './docker-labels.js'

/** The tokens of template commands, env and mount sources, as in local templates. */
export function containerTokens(spec: InstanceSpec, s: DockerTemplateSettings): Record<string, string> {
  return { ...baseTokens(spec, s.port), userSlug: spec.ownerId ? userSlug(spec.ownerId) : '' }
}

/** The template's env with tokens, then the identity environment (which wins). */
function containerEnv(spec: InstanceSpec, s: DockerTemplateSettings, tokens: Record<string, string>): string[] {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(s.env)) env[k] = substitute(v, tokens)
  Object.assign(env, { PORT: String(s.port) }, identityEnv(spec))
  return Object.entries(env).map(([k, v]) => `${k}=${v}`)
}

function containerLabels(spec: InstanceSpec, s: DockerTemplateSettings): Record<string, string> {
  const labels: Record<string, string> = {}
  // studiopool's own labels win over the template's.
  for (const [k, v] of Object.entries({
    ...s.labels,
    ...spec.labels,
    [LABEL_POOL]: spec.poolId,
    [LABEL_INSTANCE]: spec.id,
    [LABEL_TEMPLATE]: spec.template.name,
  })) {
    labels[toDockerLabelKey(k)] = v
  }
  if (s.nanoCpus) labels[DOCKER_LABEL_CPUS] = String(s.nanoCpus)
  if (s.memoryBytes) labels[DOCKER_LABEL_MEMORY] = String(s.memoryBytes)
  return labels
}

function containerMounts(
  s: DockerTemplateSettings,
  tokens: Record<string, string>,
  homeVolume: string | null,
): unknown[] {
  const mounts: unknown[] = []
  if (homeVolume && s.home) mounts.push({ Type: 'volume', Source: homeVolume, Target: s.home.mountPath })
  for (const m of s.mounts) {
    if (m.type === 'tmpfs') mounts.push({ Type: 'tmpfs', Target: m.target })
    else
      mounts.push({
        Type: m.type,
        Source: substitute(m.source!, tokens),
        Target: m.target,
        ReadOnly: m.readOnly ?? false,
      })
  }
  return mounts
}

/** Docker's `DeviceRequests` for the template's `gpus` (the NVIDIA container toolkit's `--gpus`). */
function deviceRequests(s: DockerTemplateSettings): unknown[] {
  if (!s.gpus) return []
  return [
    {
      Driver: s.gpus.driver,
      Count: s.gpus.deviceIds.length ? 0 : s.gpus.count,
      DeviceIDs: s.gpus.deviceIds.length ? s.gpus.deviceIds : null,
      Capabilities: [s.gpus.capabilities],
      Options: {},
    },
  ]
}

export function containerBody(
  spec: InstanceSpec,
  s: DockerTemplateSettings,
  host: DockerHost,
  network: string,
  homeVolume: string | null,
): Record<string, unknown> {
  const tokens = containerTokens(spec, s)
  const portKey = `${s.port}/tcp`
  const devices = deviceRequests(s)
  return {
    Image: s.image,
    ...(s.command ? { Cmd: s.command.map((a) => substitute(a, tokens)) } : {}),
    Env: containerEnv(spec, s, tokens),
    ...(s.user ? { User: s.user } : {}),
    Labels: containerLabels(spec, s),
    ExposedPorts: { [portKey]: {} },
    StopTimeout: Math.ceil(s.stopGraceMs / 1000),
    HostConfig: {
      PortBindings: { [portKey]: [{ HostIp: host.publishIp, HostPort: '' }] },
      NetworkMode: network,
      CapDrop: s.capDrop,
      CapAdd: s.capAdd,
      SecurityOpt: s.noNewPrivileges ? ['no-new-privileges'] : [],
      PidsLimit: s.pidsLimit,
      ...(s.memoryBytes ? { Memory: s.memoryBytes, MemorySwap: s.memoryBytes } : {}),
      ...(s.nanoCpus ? { NanoCpus: s.nanoCpus } : {}),
      ...(s.shmSizeBytes ? { ShmSize: s.shmSizeBytes } : {}),
      ...(devices.length ? { DeviceRequests: devices } : {}),
      ReadonlyRootfs: s.readOnlyRootfs,
      Mounts: containerMounts(s, tokens, homeVolume),
      // A session that exits is an instance lost, which the pool replaces; Docker never restarts it.
      RestartPolicy: { Name: 'no' },
    },
  }
}
