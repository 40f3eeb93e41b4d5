/**
 * Validates Kubernetes objects against the OpenAPI schema of a recent release (the definitions
 * vendored in test/fixtures/kubernetes/openapi-v1.36-definitions.json from the published spec),
 * and ServiceMonitors against the prometheus-operator CRD's schema. Strict like `kubeconform
 * -strict`: a field the schema does not define is an error (the API server would drop it silently,
 * which is how a typo in a securityContext goes unnoticed), except where the schema keeps unknown
 * fields (maps, `x-kubernetes-preserve-unknown-fields`).
 */
import { readFileSync } from 'node:fs'
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'

const FIXTURES = new URL('../fixtures/kubernetes/', import.meta.url)

type Schema = Record<string, unknown>

function load(name: string): Schema {
  return JSON.parse(readFileSync(new URL(name, FIXTURES), 'utf8')) as Schema
}

/** Kubernetes' own string formats and strictness, in plain JSON schema. */
function strict(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(strict)
  if (!node || typeof node !== 'object') return node
  const n = node as Schema
  if (n.format === 'int-or-string' || n['x-kubernetes-int-or-string'] === true)
    return { anyOf: [{ type: 'string' }, { type: 'integer' }] }
  const out: Schema = {}
  for (const [k, v] of Object.entries(n)) {
    if (k.startsWith('x-kubernetes-') || k === 'format' || k === 'default') continue
    out[k] = strict(v)
  }
  if (out.properties && out.additionalProperties === undefined && !n['x-kubernetes-preserve-unknown-fields'])
    out.additionalProperties = false
  return out
}

const spec = load('openapi-v1.36-definitions.json') as { definitions: Record<string, Schema> }
const definitions = strict(spec.definitions) as Record<string, Schema>
// A Quantity is a string or a number on the wire.
definitions['io.k8s.apimachinery.pkg.api.resource.Quantity'] = { anyOf: [{ type: 'string' }, { type: 'number' }] }

const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false })
ajv.addSchema({ $id: 'k8s', definitions })

/** `apiVersion/kind` → definition name, from the spec's x-kubernetes-group-version-kind. */
const byKind = new Map<string, string>()
for (const [name, def] of Object.entries(spec.definitions)) {
  for (const gvk of (def['x-kubernetes-group-version-kind'] as { group: string; version: string; kind: string }[]) ??
    []) {
    byKind.set(`${gvk.group ? `${gvk.group}/` : ''}${gvk.version}/${gvk.kind}`, name)
  }
}

const compiled = new Map<string, ValidateFunction>()
function validatorFor(definition: string): ValidateFunction {
  let v = compiled.get(definition)
  if (!v) {
    v = ajv.compile({ $ref: `k8s#/definitions/${definition}` })
    compiled.set(definition, v)
  }
  return v
}

const smon = load('servicemonitor-v1-schema.json') as { schema: Schema }
const smonSchema = strict(smon.schema) as Schema
;(smonSchema.properties as Schema).metadata = {
  $ref: 'k8s#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta',
}
const validateServiceMonitor = ajv.compile(smonSchema)

function describe(errors: readonly ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map((e) => {
    const extra = e.keyword === 'additionalProperties' ? ` (${String(e.params.additionalProperty)})` : ''
    return `${e.instancePath || '/'}: ${e.message ?? e.keyword}${extra}`
  })
}

/** Problems of one object against its kind's schema; empty when valid. An unknown kind is a problem. */
export function kubeSchemaProblems(obj: unknown): string[] {
  if (!obj || typeof obj !== 'object') return ['not an object']
  const { apiVersion, kind } = obj as { apiVersion?: unknown; kind?: unknown }
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return ['apiVersion and kind are required']
  if (apiVersion === 'monitoring.coreos.com/v1' && kind === 'ServiceMonitor')
    return validateServiceMonitor(obj) ? [] : describe(validateServiceMonitor.errors)
  const def = byKind.get(`${apiVersion}/${kind}`)
  if (!def) return [`no schema for ${apiVersion} ${kind} in the vendored definitions`]
  const v = validatorFor(def)
  return v(obj) ? [] : describe(v.errors)
}

/** The definition name of `apiVersion/kind`, for a kind the fake API serves (a body without apiVersion/kind). */
export function kubeDefinitionOf(apiVersion: string, kind: string): string | undefined {
  return byKind.get(`${apiVersion}/${kind}`)
}
