import { createHash } from 'node:crypto'

/**
 * Label names on Kubernetes objects. studiopool's labels are `studiopool:<key>` (provider.ts); on
 * Kubernetes objects they are `studiopool.io/<key>`, so that `kubectl get pods -l
 * studiopool.io/pool=…` reads naturally. A label value is at most 63 characters of
 * `[A-Za-z0-9._-]`, which a user id need not be: the labels carry a label-safe form (slug and
 * hash) for selection, and the annotation `studiopool.io/labels` carries every studiopool label
 * exactly, which is what list() reports.
 */

export const LABEL_GENERATION = 'studiopool:generation'
export const K8S_LABEL_ROLE = 'studiopool.io/role'
export const K8S_LABEL_POOL = 'studiopool.io/pool'
export const K8S_LABEL_INSTANCE = 'studiopool.io/instance'
export const K8S_LABEL_OWNER = 'studiopool.io/owner'
export const K8S_ANNOTATION_LABELS = 'studiopool.io/labels'
export const K8S_ANNOTATION_PORT = 'studiopool.io/port'
export const K8S_ANNOTATION_OWNER = 'studiopool.io/owner'

const VALUE_RE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/
const KEY_RE =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/

export function toKubeLabelKey(key: string): string {
  return key.startsWith('studiopool:') ? `studiopool.io/${key.slice('studiopool:'.length)}` : key
}

export function fromKubeLabelKey(key: string): string {
  return key.startsWith('studiopool.io/') ? `studiopool:${key.slice('studiopool.io/'.length)}` : key
}

/** A value as Kubernetes accepts it: itself when it is one, else a slug and 8 hex characters of its hash. */
export function labelValue(v: string): string {
  if (v.length <= 63 && VALUE_RE.test(v)) return v
  const slug = v
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .slice(0, 50)
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '')
  const hash = createHash('sha256').update(v).digest('hex').slice(0, 8)
  return slug ? `${slug}-${hash}` : hash
}

export function isLabelKey(k: string): boolean {
  const name = k.split('/').pop() ?? ''
  return KEY_RE.test(k) && name.length <= 63 && k.length <= 316
}

/** studiopool labels → Kubernetes labels (label-safe) and the annotation that keeps them exactly. */
export function kubeLabels(labels: Readonly<Record<string, string>>): {
  labels: Record<string, string>
  annotation: string
} {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(labels)) {
    const key = toKubeLabelKey(k)
    if (isLabelKey(key)) out[key] = labelValue(v)
  }
  return { labels: out, annotation: JSON.stringify(labels) }
}

/** The studiopool labels of an object: the annotation when it parses, else read back from its labels. */
export function studiopoolLabels(meta: {
  labels?: Record<string, string>
  annotations?: Record<string, string>
}): Record<string, string> {
  const raw = meta.annotations?.[K8S_ANNOTATION_LABELS]
  if (raw) {
    try {
      const parsed = JSON.parse(raw) as unknown
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
        const out: Record<string, string> = {}
        for (const [k, v] of Object.entries(parsed)) if (typeof v === 'string') out[k] = v
        return out
      }
    } catch {
      // a label a person edited by hand: fall back to the labels
    }
  }
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(meta.labels ?? {})) if (k !== K8S_LABEL_ROLE) out[fromKubeLabelKey(k)] = v
  return out
}
