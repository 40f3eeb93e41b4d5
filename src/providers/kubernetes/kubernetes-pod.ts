/** The Pod of a session: template settings, tokens, identity environment, a restrictive security context. */
import { LABEL_INSTANCE, LABEL_POOL, LABEL_TEMPLATE, type InstanceSpec } from '../provider.js'
import type { V1Pod } from './kubernetes-client.js'
import {
  K8S_ANNOTATION_LABELS,
  K8S_ANNOTATION_PORT,
  K8S_LABEL_ROLE,
  kubeLabels,
  LABEL_GENERATION,
} from './kubernetes-labels.js'
import { userSlug, type KubernetesTemplateSettings } from './kubernetes-provider-config.js'
import { baseTokens, identityEnv, substitute } from '../session-env.js'

/** The container's name in every session pod. */
export const APP_CONTAINER = 'app'
const HOME_VOLUME = 'home'

/**
 * Pods are named from the instance id and its generation: a replacement (a new generation) never
 * waits for the lost pod's name to be freed, and `create` stays idempotent on the id.
 */
export function podName(instanceId: string, generation: string | undefined): string {
  return `studiopool-${instanceId}-${generation && /^\d{1,6}$/.test(generation) ? generation : '0'}`
}

/** The user's home claim (KubeSpawner's `claim-<user>`, remembered across sessions and template changes). */
export function homeClaimName(ownerId: string): string {
  return `studiopool-home-${userSlug(ownerId)}`
}

export function podTokens(spec: InstanceSpec, port: number): Record<string, string> {
  return { ...baseTokens(spec, port), userSlug: spec.ownerId ? userSlug(spec.ownerId) : '' }
}

/** The template's env with tokens, then the identity environment (which wins). */
function podEnv(spec: InstanceSpec, s: KubernetesTemplateSettings): { name: string; value: string }[] {
  const tokens = podTokens(spec, s.port)
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(s.env)) env[k] = substitute(v, tokens)
  Object.assign(env, { PORT: String(s.port) }, identityEnv(spec))
  return Object.entries(env).map(([name, value]) => ({ name, value }))
}

export function podLabels(spec: InstanceSpec, s: KubernetesTemplateSettings): Record<string, string> {
  // studiopool's own labels win over the template's.
  const own = kubeLabels({
    ...spec.labels,
    [LABEL_POOL]: spec.poolId,
    [LABEL_INSTANCE]: spec.id,
    [LABEL_TEMPLATE]: spec.template.name,
  })
  return { ...s.labels, ...own.labels, [K8S_LABEL_ROLE]: 'session' }
}

export function podManifest(spec: InstanceSpec, s: KubernetesTemplateSettings, claim: string | null): V1Pod {
  const tokens = podTokens(spec, s.port)
  const own = kubeLabels({
    ...spec.labels,
    [LABEL_POOL]: spec.poolId,
    [LABEL_INSTANCE]: spec.id,
    [LABEL_TEMPLATE]: spec.template.name,
  })
  const home = claim && s.home
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: podName(spec.id, spec.labels[LABEL_GENERATION]),
      labels: podLabels(spec, s),
      annotations: { ...s.annotations, [K8S_ANNOTATION_LABELS]: own.annotation, [K8S_ANNOTATION_PORT]: String(s.port) },
    },
    spec: {
      // A session that ends is an instance lost, which the pool replaces; the kubelet never restarts it.
      restartPolicy: 'Never',
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      ...(s.serviceAccountName ? { serviceAccountName: s.serviceAccountName } : {}),
      terminationGracePeriodSeconds: Math.ceil(s.stopGraceMs / 1000),
      securityContext: {
        runAsNonRoot: true,
        runAsUser: s.runAsUser,
        runAsGroup: s.runAsGroup,
        fsGroup: s.fsGroup,
        seccompProfile: { type: 'RuntimeDefault' },
      },
      ...(s.nodeSelector ? { nodeSelector: { ...s.nodeSelector } } : {}),
      ...(s.tolerations ? { tolerations: s.tolerations as NonNullable<V1Pod['spec']>['tolerations'] } : {}),
      ...(s.affinity ? { affinity: s.affinity as NonNullable<V1Pod['spec']>['affinity'] } : {}),
      ...(s.imagePullSecrets?.length ? { imagePullSecrets: s.imagePullSecrets.map((name) => ({ name })) } : {}),
      ...(s.priorityClassName ? { priorityClassName: s.priorityClassName } : {}),
      ...(home ? { volumes: [{ name: HOME_VOLUME, persistentVolumeClaim: { claimName: claim } }] } : {}),
      containers: [
        {
          name: APP_CONTAINER,
          image: s.image,
          ...(s.imagePullPolicy ? { imagePullPolicy: s.imagePullPolicy } : {}),
          ...(s.command ? { command: s.command.map((a) => substitute(a, tokens)) } : {}),
          ...(s.args ? { args: s.args.map((a) => substitute(a, tokens)) } : {}),
          env: podEnv(spec, s),
          ports: [{ name: 'app', containerPort: s.port, protocol: 'TCP' }],
          ...(s.resources
            ? { resources: s.resources as NonNullable<V1Pod['spec']>['containers'][number]['resources'] }
            : {}),
          securityContext: {
            allowPrivilegeEscalation: false,
            privileged: false,
            capabilities: { drop: ['ALL'] },
            readOnlyRootFilesystem: s.readOnlyRootFilesystem ?? false,
          },
          ...(home
            ? {
                volumeMounts: [
                  {
                    name: HOME_VOLUME,
                    mountPath: s.home!.mountPath,
                    ...(s.home!.subPath ? { subPath: s.home!.subPath } : {}),
                  },
                ],
              }
            : {}),
        },
      ],
    },
  }
}
