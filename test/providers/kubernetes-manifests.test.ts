/**
 * deploy/kubernetes/: the manifests for running studiopool in a cluster (issue 17), checked with the
 * same validator as the provider's objects — the Kubernetes 1.36 OpenAPI schema, strict (unknown
 * fields refused), and the prometheus-operator CRD's schema for the ServiceMonitor — and against
 * what studiopool really does: its configuration loads, the Role grants exactly the calls the
 * provider makes, and the copy of the session NetworkPolicy is the one the provider makes.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import pino from 'pino'
import { parseAllDocuments } from 'yaml'
import { loadConfig } from '../../src/config/load.js'
import { newInstanceId } from '../../src/domain/ids.js'
import {
  KubernetesProvider,
  networkPolicyManifest,
  parseKubernetesProviderSettings,
} from '../../src/providers/kubernetes/index.js'
import { startFakeKubeApi } from '../helpers/fake-kube-api.js'
import { kubeSchemaProblems } from '../helpers/kube-openapi.js'
import { makeTemplate } from '../helpers/template.js'

const DIR = new URL('../../deploy/kubernetes/', import.meta.url)
type Obj = Record<string, any>

const docs: { file: string; obj: Obj }[] = readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((file) =>
    parseAllDocuments(readFileSync(new URL(file, DIR), 'utf8'))
      .map((d) => d.toJSON() as Obj | null)
      .filter((o): o is Obj => !!o)
      .map((obj) => ({ file, obj })),
  )
const of = (kind: string) => docs.filter((d) => d.obj.kind === kind).map((d) => d.obj)
const ENV = {
  DATABASE_URL: 'postgres://u:p@db:5432/studiopool',
  STUDIOPOOL_SECRET: 'x'.repeat(48),
  PROXY_KEY: 'p'.repeat(32),
  STUDIOPOOL_ADMIN_KEY: 'a'.repeat(32),
  OIDC_CLIENT_SECRET: 'o'.repeat(20),
}

describe('deploy/kubernetes manifests', () => {
  it('every object is valid against the Kubernetes 1.36 schema (ServiceMonitor: its CRD schema), strictly', () => {
    assert.ok(docs.length >= 15, `manifests found (${docs.length})`)
    for (const { file, obj } of docs)
      assert.deepEqual(kubeSchemaProblems(obj), [], `${file}: ${obj.kind} ${obj.metadata?.name}`)
    const kinds = new Set(docs.map((d) => d.obj.kind))
    for (const k of [
      'Namespace',
      'Deployment',
      'Service',
      'Ingress',
      'ConfigMap',
      'Secret',
      'ServiceAccount',
      'Role',
      'RoleBinding',
      'NetworkPolicy',
      'ServiceMonitor',
    ])
      assert.ok(kinds.has(k), `a ${k}`)
  })

  it('the validator refuses what the API server would drop or refuse (it can fail)', () => {
    const dep = structuredClone(of('Deployment')[0]!)
    dep.spec.template.spec.containers[0].securityContext.allowPrivilegeEscalaton = false
    assert.match(kubeSchemaProblems(dep).join('\n'), /allowPrivilegeEscalaton/)
    const sm = structuredClone(of('ServiceMonitor')[0]!)
    sm.spec.endpoints[0].interval = '30 seconds'
    assert.match(kubeSchemaProblems(sm).join('\n'), /interval/)
  })

  it("the ConfigMap's studiopool.yaml loads, and its kubernetes settings and template are valid", () => {
    const cm = of('ConfigMap').find((c) => c.metadata.name === 'studiopool')!
    const cfg = loadConfig({ text: cm.data['studiopool.yaml'], env: ENV, cwd: '/tmp' })
    assert.equal(cfg.store.driver, 'postgres')
    const settings = parseKubernetesProviderSettings(cfg.providers.kubernetes ?? {})
    assert.equal(settings.auth, 'in-cluster')
    const p = new KubernetesProvider({
      poolId: cfg.pool.id,
      dataDir: '/data',
      settings: cfg.providers.kubernetes ?? {},
      log: pino({ level: 'silent' }),
    })
    for (const t of cfg.templates.filter((x) => x.provider === 'kubernetes'))
      assert.deepEqual(p.validateTemplate(t), [], t.name)
    // The Role lives in the namespace the provider uses; the pods the policy admits are studiopool's.
    assert.equal(of('Role')[0]!.metadata.namespace, settings.namespace)
    for (const d of of('Deployment')) {
      const labels = d.spec.template.metadata.labels as Record<string, string>
      for (const [k, v] of Object.entries(settings.gatewayPodLabels))
        assert.equal(labels[k], v, `${d.metadata.name} carries ${k}`)
      assert.equal(d.metadata.namespace, settings.gatewayNamespace)
    }
    // The copy of the session policy in networkpolicy.yaml is the one the provider makes.
    const made = JSON.parse(
      JSON.stringify(networkPolicyManifest(cfg.pool.id, settings)).replaceAll('"_from"', '"from"'),
    )
    const copy = of('NetworkPolicy').find((n) => n.metadata.name === made.metadata.name)!
    assert.deepEqual(copy.spec, made.spec)
    assert.equal(copy.metadata.namespace, settings.namespace)
  })

  it('the api and worker run as the bound service account; the gateway mounts no token', () => {
    const binding = of('RoleBinding')[0]!
    assert.equal(binding.roleRef.name, of('Role')[0]!.metadata.name)
    const subject = binding.subjects[0]
    for (const d of of('Deployment')) {
      const spec = d.spec.template.spec
      const role = d.spec.template.metadata.labels['app.kubernetes.io/component']
      if (role === 'gateway') {
        assert.equal(spec.automountServiceAccountToken, false)
        assert.notEqual(spec.serviceAccountName, subject.name)
      } else {
        assert.equal(spec.serviceAccountName, subject.name, d.metadata.name)
        assert.equal(d.metadata.namespace, subject.namespace)
      }
      assert.equal(spec.securityContext.runAsNonRoot, true)
      assert.deepEqual(spec.containers[0].securityContext.capabilities.drop, ['ALL'])
    }
  })

  describe('the Role grants exactly the calls the provider makes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'studiopool-k8s-rbac-'))
    after(() => rmSync(dir, { recursive: true, force: true }))

    it('every verb the provider used is granted, and nothing it never uses', async () => {
      const api = await startFakeKubeApi()
      const log = pino({ level: 'silent' })
      const op = { log }
      const settings = { kubeconfig: api.writeKubeconfig(dir), namespace: 'studiopool-sessions', retryBackoff: 50 }
      const made: KubernetesProvider[] = []
      const make = async (extra: Record<string, unknown> = {}) => {
        const p = new KubernetesProvider({
          poolId: 'studiopool',
          dataDir: dir,
          settings: { ...settings, ...extra },
          log,
        })
        made.push(p)
        await p.init(op)
        return p
      }
      try {
        const a = await make()
        const b = await make()
        const t = makeTemplate({
          name: 'lab',
          provider: 'kubernetes',
          minFree: 0,
          port: 8888,
          settings: { image: 'img:1', home: { mountPath: '/home/u' } },
        })
        const id = newInstanceId()
        const spec = {
          id,
          poolId: 'studiopool',
          template: t,
          basePath: `/s/${id}/`,
          labels: { 'studiopool:pool': 'studiopool', 'studiopool:instance': id, 'studiopool:template': 'lab' },
          progressUrl: 'http://api/p',
          progressToken: 't',
          appToken: 'a',
          ownerId: 'uma',
          sessionUrl: 'https://s/',
        }
        const [inst] = await Promise.all([a.create(spec, op), b.create(spec, op)]) // one meets 409 and reads the pod
        await a.relabel(inst.ref, { 'studiopool:owner': 'uma' }, op)
        await a.destroy(inst.ref, op)
        const homes = await a.listHomes(op)
        await a.deleteHome(homes.homes[0]!.ref, op)
        // The policy is put back at the next start when it is gone (create) or differs (update).
        api.deleteBehindTheBack('networkpolicies', 'studiopool-sessions', 'studiopool-sessions')
        await make()
        await make({ gatewayPodLabels: { app: 'other-gateway' } })
      } finally {
        for (const p of made) await p.close()
        await api.stop()
      }
      const verb = (r: { method: string; name: string | null; watch: boolean }) =>
        r.watch
          ? 'watch'
          : r.method === 'GET'
            ? r.name
              ? 'get'
              : 'list'
            : { POST: 'create', PATCH: 'patch', PUT: 'update', DELETE: 'delete' }[r.method]!
      const group = (resource: string) => (resource === 'networkpolicies' ? 'networking.k8s.io' : '')
      const used = new Set(api.requests.map((r) => `${group(r.resource)}/${r.resource}/${verb(r)}`))
      const granted = new Set(
        (of('Role')[0]!.rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[]).flatMap((rule) =>
          rule.apiGroups.flatMap((g) => rule.resources.flatMap((res) => rule.verbs.map((v) => `${g}/${res}/${v}`))),
        ),
      )
      for (const u of used) assert.ok(granted.has(u), `the Role grants ${u}`)
      const unused = [...granted].filter((g) => !used.has(g))
      assert.deepEqual(unused, [], 'nothing granted that the provider never calls')
    })
  })
})
