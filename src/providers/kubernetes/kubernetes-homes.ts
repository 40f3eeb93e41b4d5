/**
 * Per-user home claims and the isolation NetworkPolicy: the objects of the pool that are not pods.
 *
 * A claim is `studiopool-home-<user slug>` (KubeSpawner's `remember_pvc_name`): made when the user's
 * first session of a template with a `home` starts, reused by every later session of that user —
 * whatever the template, so a template renamed keeps its users' files — and never deleted when a
 * session ends; only `deleteHome`, an explicit admin action, deletes it.
 */
import type { HomeRecord } from '../provider.js'
import {
  KubeApiError,
  type KubeClient,
  type V1NetworkPolicy,
  type V1PersistentVolumeClaim,
} from './kubernetes-client.js'
import {
  K8S_ANNOTATION_OWNER,
  K8S_LABEL_OWNER,
  K8S_LABEL_POOL,
  K8S_LABEL_ROLE,
  labelValue,
} from './kubernetes-labels.js'
import type { KubernetesProviderSettings } from './kubernetes-provider-config.js'
import { homeClaimName } from './kubernetes-pod.js'

export function claimManifest(poolId: string, ownerId: string, s: KubernetesProviderSettings): V1PersistentVolumeClaim {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: homeClaimName(ownerId),
      labels: {
        [K8S_LABEL_POOL]: labelValue(poolId),
        [K8S_LABEL_ROLE]: 'home',
        [K8S_LABEL_OWNER]: labelValue(ownerId),
      },
      annotations: { [K8S_ANNOTATION_OWNER]: ownerId },
    },
    spec: {
      accessModes: [...s.homeAccessModes],
      resources: { requests: { storage: s.homeSize } },
      ...(s.homeStorageClass ? { storageClassName: s.homeStorageClass } : {}),
    },
  }
}

/** The user's claim, made when missing (a concurrent create by another process counts as made). */
export async function ensureHomeClaim(
  client: KubeClient,
  poolId: string,
  ownerId: string,
  s: KubernetesProviderSettings,
  signal?: AbortSignal,
): Promise<string> {
  const name = homeClaimName(ownerId)
  const found = await client.getClaim(name, signal)
  if (found) {
    if (found.metadata?.annotations?.[K8S_ANNOTATION_OWNER] !== ownerId)
      throw new KubeApiError(409, 'Conflict', `claim ${name} exists but belongs to someone else; not mounted`)
    return name
  }
  try {
    await client.createClaim(claimManifest(poolId, ownerId, s), signal)
  } catch (err) {
    if (!(err instanceof KubeApiError && err.status === 409)) throw err
  }
  return name
}

export function homeRecord(c: V1PersistentVolumeClaim, namespace: string): HomeRecord {
  const name = c.metadata?.name ?? ''
  return {
    ref: name,
    owner: c.metadata?.annotations?.[K8S_ANNOTATION_OWNER] ?? c.metadata?.labels?.[K8S_LABEL_OWNER] ?? '',
    createdAt: c.metadata?.creationTimestamp ? new Date(c.metadata.creationTimestamp).toISOString() : null,
    where: `PersistentVolumeClaim ${name} in namespace ${namespace}${c.spec?.storageClassName ? ` (storage class ${c.spec.storageClassName})` : ''}`,
  }
}

export function networkPolicyName(): string {
  return 'studiopool-sessions'
}

/**
 * Ingress to this pool's session pods only from the gateway's pods, on the sessions' ports: no
 * session reaches another (architecture.md contract 5). Egress is not restricted here (sessions
 * install packages); docs/kubernetes.md shows how to add an egress policy.
 */
export function networkPolicyManifest(poolId: string, s: KubernetesProviderSettings): V1NetworkPolicy {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: networkPolicyName(),
      labels: { [K8S_LABEL_POOL]: labelValue(poolId), 'app.kubernetes.io/managed-by': 'studiopool' },
    },
    spec: {
      podSelector: { matchLabels: { [K8S_LABEL_POOL]: labelValue(poolId), [K8S_LABEL_ROLE]: 'session' } },
      policyTypes: ['Ingress'],
      ingress: [
        {
          _from: [
            {
              podSelector: { matchLabels: { ...s.gatewayPodLabels } },
              ...(s.gatewayNamespace
                ? { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': s.gatewayNamespace } } }
                : {}),
            },
          ],
        },
      ],
    },
  }
}

/** Makes the policy, or puts its spec back when someone changed it. */
export async function ensureNetworkPolicy(
  client: KubeClient,
  poolId: string,
  s: KubernetesProviderSettings,
): Promise<void> {
  const want = networkPolicyManifest(poolId, s)
  const cur = await client.getNetworkPolicy(want.metadata!.name!)
  if (!cur) {
    try {
      await client.createNetworkPolicy(want)
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 409)) throw err
    }
    return
  }
  if (stable(cur.spec) !== stable(want.spec))
    await client.replaceNetworkPolicy({
      ...want,
      metadata: { ...want.metadata, resourceVersion: cur.metadata?.resourceVersion },
    })
}

/** JSON with sorted keys, undefined fields dropped: two specs compare equal whatever their key order. */
function stable(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : x,
  )
}
