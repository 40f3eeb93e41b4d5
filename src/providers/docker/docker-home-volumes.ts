/**
 * Per-user home volumes: created on first use, labelled with the pool and the owner, never removed
 * by a session's end; listed and deleted only by an explicit admin action (architecture.md contract 4).
 */
import { ProviderError } from '../../domain/errors.js'
import { LABEL_OWNER, LABEL_POOL, type InstanceSpec, type OperationOptions } from '../provider.js'
import type { VolumeInfo } from './docker-client.js'
import type { DockerHosts, HostState } from './docker-hosts.js'
import { isUnavailable } from './docker-hosts.js'
import { DOCKER_LABEL_KIND, fromDockerLabels, toDockerLabelKey } from './docker-labels.js'
import { substitute, type DockerTemplateSettings } from './docker-provider-config.js'

const NAME = 'docker'
/** Docker's rule for container and volume names. */
const DOCKER_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$/

export interface HomeVolume {
  readonly host: string
  readonly name: string
  readonly owner: string
  readonly createdAt: string | null
}

/** Creates the user's home volume on the host when it is not there yet; returns its name (null: no `home`). */
export async function ensureHomeVolume(
  hosts: DockerHosts,
  h: HostState,
  spec: InstanceSpec,
  s: DockerTemplateSettings,
  tokens: Readonly<Record<string, string>>,
  opts: OperationOptions & { timeoutMs: number },
): Promise<string | null> {
  if (!s.home) return null
  if (!spec.ownerId) {
    throw new ProviderError(
      NAME,
      `template "${spec.template.name}" has docker.home, and a session with a home volume needs its user at create (minFree: 0)`,
      { kind: 'config' },
    )
  }
  const volume = substitute(s.home.volume, tokens)
  if (!DOCKER_NAME_RE.test(volume))
    throw new ProviderError(
      NAME,
      `docker.home.volume: "${volume}" is not a valid Docker volume name (use {{userSlug}})`,
      {
        kind: 'config',
      },
    )
  const owner = spec.ownerId
  // The daemon returns an existing volume unchanged (its labels, its files).
  await hosts.onHost(h, (c) =>
    c.volumeCreate(
      volume,
      {
        [toDockerLabelKey(LABEL_POOL)]: spec.poolId,
        [toDockerLabelKey(LABEL_OWNER)]: owner,
        [DOCKER_LABEL_KIND]: 'home',
      },
      { signal: opts.signal, timeoutMs: opts.timeoutMs },
    ),
  )
  return volume
}

/**
 * Home volumes of this pool on every answering host, optionally of one user. Hosts that do not
 * answer are named in `unreachable` (their volumes are not lost, only not listed now).
 */
export async function listHomeVolumes(
  hosts: DockerHosts,
  poolId: string,
  opts: OperationOptions,
  ownerId?: string,
): Promise<{ volumes: HomeVolume[]; unreachable: string[] }> {
  const volumes: HomeVolume[] = []
  const unreachable: string[] = []
  for (const h of hosts.all) {
    if (!hosts.usable(h)) {
      unreachable.push(h.host.name)
      continue
    }
    const filters = [`${toDockerLabelKey(LABEL_POOL)}=${poolId}`, `${DOCKER_LABEL_KIND}=home`]
    if (ownerId !== undefined) filters.push(`${toDockerLabelKey(LABEL_OWNER)}=${ownerId}`)
    let vols: VolumeInfo[]
    try {
      vols = await hosts.onHost(h, (c) => c.volumeList(filters, { signal: opts.signal }))
    } catch (err) {
      if (!isUnavailable(err)) throw err
      unreachable.push(h.host.name)
      continue
    }
    for (const v of vols)
      volumes.push({
        host: h.host.name,
        name: v.Name,
        owner: fromDockerLabels(v.Labels)[LABEL_OWNER] ?? '',
        createdAt: v.CreatedAt ?? null,
      })
  }
  volumes.sort((a, b) => a.owner.localeCompare(b.owner) || a.host.localeCompare(b.host) || a.name.localeCompare(b.name))
  return { volumes, unreachable }
}

/**
 * Deletes one home volume of this pool. Resolves `false` when it is not there; throws a
 * ProviderError when the volume is not a home volume of this pool, or a session uses it (409).
 */
export async function deleteHomeVolume(
  hosts: DockerHosts,
  poolId: string,
  host: string,
  name: string,
  opts: OperationOptions,
): Promise<boolean> {
  const h = hosts.get(host)
  if (!h) throw new ProviderError(NAME, `no Docker host named "${host.slice(0, 100)}"`, { kind: 'config' })
  const v = await hosts.onHost(h, (c) => c.volumeInspect(name, { signal: opts.signal }))
  if (!v) return false
  const labels = v.Labels ?? {}
  if (labels[toDockerLabelKey(LABEL_POOL)] !== poolId || labels[DOCKER_LABEL_KIND] !== 'home') {
    throw new ProviderError(NAME, `volume "${name}" on ${host} is not a home volume of this pool`, { kind: 'config' })
  }
  await hosts.onHost(h, (c) => c.volumeRemove(name, { signal: opts.signal }))
  return true
}
