import { createHash } from 'node:crypto'
import type { TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { parseDuration } from '../../domain/duration.js'
import {
  kubernetesProviderSettingsSchema,
  kubernetesTemplateSettingsSchema,
  type KubernetesProviderSettingsInput,
  type KubernetesTemplateSettingsInput,
} from './kubernetes-provider-schema.js'

export { kubernetesProviderSettingsSchema, kubernetesTemplateSettingsSchema } from './kubernetes-provider-schema.js'

/**
 * Settings of the kubernetes provider: provider-wide (`providers.kubernetes`) and per template
 * (`templates.<name>.kubernetes`). docs/kubernetes.md lists every key.
 *
 * ```yaml
 * providers:
 *   kubernetes: { namespace: studiopool-sessions, homeStorageClass: standard-rwo, homeSize: 10Gi }
 * templates:
 *   jupyter:
 *     provider: kubernetes
 *     port: 8888
 *     kubernetes:
 *       image: quay.io/jupyter/base-notebook:2025-01-06
 *       args: [start-notebook.py, '--ServerApp.base_url={{basePath}}', '--IdentityProvider.token={{appToken}}']
 *       resources: { requests: { cpu: 500m, memory: 1Gi }, limits: { memory: 2Gi } }
 *       home: { mountPath: /home/jovyan }
 * ```
 */

export const KUBERNETES_DEFAULTS = {
  namespace: 'studiopool',
  requestTimeoutMs: 30_000,
  watchTimeoutMs: 300_000,
  retryBackoffMs: 1_000,
  maxRetryBackoffMs: 30_000,
  homeSize: '10Gi',
  gatewayPodLabels: { 'app.kubernetes.io/name': 'studiopool' } as Record<string, string>,
  lostRetentionMs: 600_000,
  runAsUser: 1000,
  runAsGroup: 100,
  fsGroup: 100,
  stopGraceMs: 10_000,
} as const

export interface KubernetesProviderSettings {
  readonly namespace: string
  readonly auth: 'in-cluster' | 'kubeconfig'
  readonly kubeconfig: string | null
  readonly context: string | null
  readonly requestTimeoutMs: number
  readonly watchTimeoutMs: number
  readonly retryBackoffMs: number
  readonly maxRetryBackoffMs: number
  readonly homeStorageClass: string | null
  readonly homeSize: string
  readonly homeAccessModes: readonly string[]
  readonly networkPolicy: boolean
  readonly gatewayPodLabels: Readonly<Record<string, string>>
  readonly gatewayNamespace: string | null
  readonly lostRetentionMs: number
}

export type KubernetesTemplateSettings = Omit<
  KubernetesTemplateSettingsInput,
  'port' | 'stopGrace' | 'runAsUser' | 'runAsGroup' | 'fsGroup' | 'env' | 'labels' | 'annotations'
> & {
  readonly port: number
  readonly stopGraceMs: number
  readonly runAsUser: number
  readonly runAsGroup: number
  readonly fsGroup: number
  readonly env: Readonly<Record<string, string>>
  readonly labels: Readonly<Record<string, string>>
  readonly annotations: Readonly<Record<string, string>>
}

function schemaProblems(schema: TSchema, raw: unknown, prefix: string): string[] {
  if (Value.Check(schema, raw)) return []
  const out = [...Value.Errors(schema, raw)].map((e) => `${prefix}${e.path.replaceAll('/', '.')}: ${e.message}`)
  return out.length ? out : [`${prefix}: invalid`]
}

function duration(v: string | number | undefined, fallback: number, path: string, problems: string[]): number {
  if (v === undefined) return fallback
  const ms = parseDuration(v)
  if (ms === undefined) problems.push(`${path}: not a duration (${String(v)})`)
  return ms ?? fallback
}

/** Returns the settings, or throws with every problem (each prefixed with its path). */
export function parseKubernetesProviderSettings(raw: Readonly<Record<string, unknown>>): KubernetesProviderSettings {
  const p = 'providers.kubernetes'
  const problems = schemaProblems(kubernetesProviderSettingsSchema, raw, p)
  if (problems.length) throw new Error(problems.join('; '))
  const s = raw as KubernetesProviderSettingsInput
  const auth = s.auth ?? (s.kubeconfig ? 'kubeconfig' : 'in-cluster')
  if (auth === 'kubeconfig' && !s.kubeconfig) problems.push(`${p}.kubeconfig: required with auth: kubeconfig`)
  const out: KubernetesProviderSettings = {
    namespace: s.namespace ?? KUBERNETES_DEFAULTS.namespace,
    auth,
    kubeconfig: s.kubeconfig ?? null,
    context: s.context ?? null,
    requestTimeoutMs: duration(s.requestTimeout, KUBERNETES_DEFAULTS.requestTimeoutMs, `${p}.requestTimeout`, problems),
    watchTimeoutMs: duration(s.watchTimeout, KUBERNETES_DEFAULTS.watchTimeoutMs, `${p}.watchTimeout`, problems),
    retryBackoffMs: duration(s.retryBackoff, KUBERNETES_DEFAULTS.retryBackoffMs, `${p}.retryBackoff`, problems),
    maxRetryBackoffMs: duration(
      s.maxRetryBackoff,
      KUBERNETES_DEFAULTS.maxRetryBackoffMs,
      `${p}.maxRetryBackoff`,
      problems,
    ),
    homeStorageClass: s.homeStorageClass ?? null,
    homeSize: String(s.homeSize ?? KUBERNETES_DEFAULTS.homeSize),
    homeAccessModes: s.homeAccessModes ?? ['ReadWriteOnce'],
    networkPolicy: s.networkPolicy ?? true,
    gatewayPodLabels: s.gatewayPodLabels ?? KUBERNETES_DEFAULTS.gatewayPodLabels,
    gatewayNamespace: s.gatewayNamespace ?? null,
    lostRetentionMs: duration(s.lostRetention, KUBERNETES_DEFAULTS.lostRetentionMs, `${p}.lostRetention`, problems),
  }
  if (out.watchTimeoutMs < 10_000) problems.push(`${p}.watchTimeout: at least 10s`)
  if (problems.length) throw new Error(problems.join('; '))
  return out
}

/** A template's settings, or the problems with them (each prefixed with its path). */
export function parseKubernetesTemplateSettings(
  raw: Readonly<Record<string, unknown>>,
  templatePort: number | null,
): { settings: KubernetesTemplateSettings; problems: [] } | { settings: null; problems: string[] } {
  const p = 'kubernetes'
  const problems = schemaProblems(kubernetesTemplateSettingsSchema, raw, p)
  if (problems.length) return { settings: null, problems }
  const s = raw as KubernetesTemplateSettingsInput
  const port = s.port ?? templatePort
  if (!port) problems.push(`${p}.port: required (or the template's port)`)
  const stopGraceMs = duration(s.stopGrace, KUBERNETES_DEFAULTS.stopGraceMs, `${p}.stopGrace`, problems)
  if (problems.length) return { settings: null, problems }
  return {
    settings: {
      ...s,
      port: port!,
      stopGraceMs,
      runAsUser: s.runAsUser ?? KUBERNETES_DEFAULTS.runAsUser,
      runAsGroup: s.runAsGroup ?? KUBERNETES_DEFAULTS.runAsGroup,
      fsGroup: s.fsGroup ?? KUBERNETES_DEFAULTS.fsGroup,
      env: s.env ?? {},
      labels: s.labels ?? {},
      annotations: s.annotations ?? {},
    },
    problems: [],
  }
}

/**
 * A user id as a Kubernetes name part and label value: lowercase `[a-z0-9-]`, at most 40
 * characters, then 8 hex characters of the id's SHA-256, so that `Alice` and `alice`, or two ids
 * that slug alike, never share a claim (KubeSpawner's safe names, with a hash against collisions).
 */
export function userSlug(userId: string): string {
  const base =
    userId
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 40)
      .replace(/-+$/, '') || 'user'
  return `${base}-${createHash('sha256').update(userId).digest('hex').slice(0, 8)}`
}

export { substitute } from '../session-env.js'
