/**
 * The kubernetes provider on its own, with its official client, against the fake API server at the
 * wire level (test/helpers/fake-kube-api.ts): the watch (bookmarks, dropped watches, 410 Gone and
 * re-list), the pod it sends (labels, security context, template fields, identity environment), the
 * API server's refusals, two server processes creating one session, and the isolation NetworkPolicy.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import type { TemplateConfig } from '../../src/config/types.js'
import { ProviderError, ValidationError } from '../../src/domain/errors.js'
import { newInstanceId } from '../../src/domain/ids.js'
import {
  KubernetesProvider,
  networkPolicyManifest,
  parseKubernetesProviderSettings,
} from '../../src/providers/kubernetes/index.js'
import {
  LABEL_INSTANCE,
  LABEL_OWNER,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
} from '../../src/providers/provider.js'
import { startFakeKubeApi, type FakeKubeApi } from '../helpers/fake-kube-api.js'
import { kubeSchemaProblems } from '../helpers/kube-openapi.js'
import { makeTemplate } from '../helpers/template.js'
import { waitFor } from '../helpers/wait.js'

const POOL = 'k8s-unit'
const NS = 'unit'
const log = pino({ level: 'silent' })
const op = { log }

describe('kubernetes provider', { timeout: 120_000 }, () => {
  let api: FakeKubeApi
  let dir: string
  const providers: KubernetesProvider[] = []

  async function provider(settings: Record<string, unknown> = {}): Promise<KubernetesProvider> {
    const p = new KubernetesProvider({
      poolId: POOL,
      dataDir: dir,
      settings: {
        kubeconfig: api.writeKubeconfig(dir),
        namespace: NS,
        retryBackoff: 50,
        maxRetryBackoff: 200,
        ...settings,
      },
      log,
    })
    providers.push(p)
    await p.init(op)
    return p
  }

  function template(settings: Record<string, unknown> = {}, extra: Partial<TemplateConfig> = {}): TemplateConfig {
    return makeTemplate({
      name: 'lab',
      provider: 'kubernetes',
      minFree: 0,
      port: 8888,
      settings: { image: 'quay.io/jupyter/base-notebook:2025-01-06', ...settings },
      ...extra,
    })
  }

  function spec(
    t: TemplateConfig,
    id = newInstanceId(),
    labels: Record<string, string> = {},
    ownerId: string | null = null,
  ): InstanceSpec {
    return {
      id,
      poolId: POOL,
      template: t,
      basePath: `/s/${id}/`,
      labels: {
        [LABEL_POOL]: POOL,
        [LABEL_INSTANCE]: id,
        [LABEL_TEMPLATE]: t.name,
        'studiopool:generation': '0',
        ...labels,
      },
      progressUrl: `http://gw.example/api/v1/instances/${id}/progress`,
      progressToken: 'progress-secret',
      appToken: 'app-secret',
      ownerId,
      sessionUrl: `https://studio.example/s/${id}/`,
    }
  }

  before(async () => {
    api = await startFakeKubeApi({ bookmarkMs: 100 })
    dir = mkdtempSync(join(tmpdir(), 'studiopool-k8s-unit-'))
  })
  after(async () => {
    for (const p of providers) await p.close().catch(() => {})
    await api?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  it('sends a pod named from the instance id, labelled, locked down, with the template and identity in it', async () => {
    const p = await provider()
    const t = template({
      args: ['start-notebook.py', '--ServerApp.base_url={{basePath}}', '--IdentityProvider.token={{appToken}}'],
      env: { GREETING: 'hello {{user}}' },
      resources: { requests: { cpu: '500m', memory: '1Gi' }, limits: { memory: '2Gi', 'nvidia.com/gpu': 1 } },
      nodeSelector: { 'node.kubernetes.io/instance-type': 'm5.xlarge' },
      tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'sessions', effect: 'NoSchedule' }],
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [{ matchExpressions: [{ key: 'pool', operator: 'In', values: ['sessions'] }] }],
          },
        },
      },
      imagePullSecrets: ['registry-cred'],
      priorityClassName: 'sessions',
    })
    const s = spec(t, newInstanceId(), { [LABEL_OWNER]: 'Ann Smith <ann@example.org>' }, 'Ann Smith <ann@example.org>')
    const inst = await p.create(s, op)
    const pod = api.get('pods', NS, `studiopool-${s.id}-0`)!
    assert.ok(pod, 'the pod is named studiopool-<instance id>-<generation>')
    assert.deepEqual(kubeSchemaProblems(pod), [], 'valid against the Kubernetes 1.36 schema')
    assert.equal(inst.ref, `studiopool-${s.id}-0/${pod.metadata.uid}`)
    const l = pod.metadata.labels
    assert.equal(l['studiopool.io/pool'], POOL)
    assert.equal(l['studiopool.io/instance'], s.id)
    assert.equal(l['studiopool.io/template'], 'lab')
    assert.equal(l['studiopool.io/generation'], '0')
    assert.match(l['studiopool.io/owner'], /^Ann-Smith-ann-example.org-[0-9a-f]{8}$/, 'a label-safe owner')
    assert.equal(inst.labels[LABEL_OWNER], 'Ann Smith <ann@example.org>', 'the exact owner comes back')
    const ps = pod.spec
    assert.equal(ps.automountServiceAccountToken, false)
    assert.equal(ps.restartPolicy, 'Never')
    assert.equal(ps.securityContext.runAsNonRoot, true)
    assert.deepEqual(ps.securityContext.seccompProfile, { type: 'RuntimeDefault' })
    const c = ps.containers[0]
    assert.equal(c.securityContext.allowPrivilegeEscalation, false)
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL'])
    assert.deepEqual(c.resources.limits, { memory: '2Gi', 'nvidia.com/gpu': 1 })
    assert.deepEqual(ps.nodeSelector, { 'node.kubernetes.io/instance-type': 'm5.xlarge' })
    assert.equal(ps.tolerations[0].key, 'dedicated')
    assert.equal(
      ps.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0]
        .key,
      'pool',
    )
    assert.deepEqual(ps.imagePullSecrets, [{ name: 'registry-cred' }])
    assert.equal(ps.priorityClassName, 'sessions')
    assert.deepEqual(c.args, [
      'start-notebook.py',
      `--ServerApp.base_url=/s/${s.id}/`,
      '--IdentityProvider.token=app-secret',
    ])
    const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]))
    assert.equal(env.GREETING, 'hello Ann Smith <ann@example.org>')
    assert.equal(env.STUDIOPOOL_INSTANCE_ID, s.id)
    assert.equal(env.STUDIOPOOL_USER, 'Ann Smith <ann@example.org>')
    assert.equal(env.STUDIOPOOL_PROGRESS_TOKEN, 'progress-secret')
    const running = await waitFor(
      'the pod to run',
      async () => (await p.describe([inst.ref], op)).get(inst.ref)?.address,
    )
    assert.equal(running, 'http://127.0.0.1:8888', 'reached by pod IP and port')
    await p.destroy(inst.ref, op)
  })

  it('refusals of the API server are clear errors: 422 Invalid names the field, settings errors name the key', async () => {
    const p = await provider()
    // A label value Kubernetes refuses (a space): the API server answers 422 Invalid with a Status body.
    const bad = template({ labels: { team: 'data science' } })
    await assert.rejects(p.create(spec(bad), op), (err: unknown) => {
      assert.ok(err instanceof ProviderError)
      assert.equal(err.kind, 'config', 'a configuration problem, not retried')
      assert.match(err.message, /refused.*Invalid value: "data science": a label value/)
      return true
    })
    assert.throws(
      () => new KubernetesProvider({ poolId: POOL, dataDir: dir, settings: { namespace: 'Not_A_Namespace' }, log }),
      (err: unknown) =>
        err instanceof ValidationError &&
        /providers\.kubernetes\.namespace/.test(JSON.stringify(err.details ?? err.message)),
    )
    assert.deepEqual(p.validateTemplate(template({ image: '' })).length > 0, true)
    assert.match(
      p.validateTemplate(template({ home: { mountPath: '/home/jovyan' } }, { minFree: 1 }))[0]!,
      /minFree: 0/,
    )
  })

  it('two server processes creating one session make one pod (409 AlreadyExists is adopted)', async () => {
    const a = await provider()
    const b = await provider()
    const s = spec(template())
    const [x, y] = await Promise.all([a.create(s, op), b.create(s, op)])
    assert.equal(x.ref, y.ref)
    assert.equal(api.list('pods', NS).filter((pod) => pod.metadata.labels['studiopool.io/instance'] === s.id).length, 1)
    assert.ok(
      api.requests.some((r) => r.method === 'POST' && r.resource === 'pods' && r.status === 409),
      'one create met 409',
    )
    await a.destroy(x.ref, op)
  })

  it('the watch: bookmarks keep it current; a dropped watch resumes without duplicates; 410 Gone re-lists and misses no deletion', async () => {
    const p = await provider()
    const t = template()
    const made = await Promise.all([1, 2, 3].map(() => p.create(spec(t), op)))
    await waitFor('bookmarks', () => (p.watchStats.pods?.bookmarks ?? 0) >= 2)
    assert.ok(
      api.requests.some((r) => r.watch && r.resource === 'pods' && r.query.includes('allowWatchBookmarks=true')),
    )
    const listsBefore = p.watchStats.pods!.lists
    // Dropped: renewed from the last resourceVersion, no re-list, every pod once.
    api.dropWatches()
    api.run(NS, made[0]!.ref.split('/')[0]!) // a change while it reconnects
    await waitFor('the watch to be back', () => api.watchCount >= 2)
    const once = await p.list(op)
    for (const m of made)
      assert.equal(once.filter((i) => i.ref === m.ref).length, 1, 'no duplicate after a dropped watch')
    assert.equal(p.watchStats.pods!.lists, listsBefore, 'resumed, not re-listed')
    // Unreachable while a pod is deleted behind our back and the history is compacted: 410 → re-list.
    api.unreachableFor(500)
    api.deleteBehindTheBack('pods', NS, made[1]!.ref.split('/')[0]!)
    const extra = spec(t)
    api.compact()
    await waitFor(
      'the re-list after 410',
      () => p.watchStats.pods!.expired >= 1 && p.watchStats.pods!.lists > listsBefore,
      10_000,
    )
    const after = await p.list(op)
    const gone = after.find((i) => i.ref === made[1]!.ref)
    assert.ok(gone, 'the pod deleted during the gap is reported')
    assert.equal(gone.state, 'terminated', 'as lost, not live')
    for (const i of [made[0]!, made[2]!]) {
      assert.equal(after.filter((x) => x.ref === i.ref).length, 1, 'no duplicate after the re-list')
      assert.notEqual(after.find((x) => x.ref === i.ref)!.state, 'terminated')
    }
    const fresh = await p.create(extra, op)
    assert.ok(
      (await p.list(op)).some((i) => i.ref === fresh.ref),
      'the cache follows after the re-list',
    )
    for (const m of [made[0]!, made[2]!, fresh]) await p.destroy(m.ref, op)
  })

  it('the NetworkPolicy admits ingress to session pods only from the gateway pods, and is put back when edited', async () => {
    const settings = parseKubernetesProviderSettings({ gatewayPodLabels: { app: 'studiopool-gateway' } })
    const np = networkPolicyManifest(POOL, settings)
    const wire = JSON.parse(JSON.stringify(np).replaceAll('"_from"', '"from"'))
    assert.deepEqual(kubeSchemaProblems(wire), [])
    const session = { 'studiopool.io/pool': POOL, 'studiopool.io/role': 'session' }
    const gateway = { app: 'studiopool-gateway' }
    // Kubernetes' semantics: a pod selected by a policy with Ingress accepts only what a rule admits.
    const admits = (from: Record<string, string>, to: Record<string, string>): boolean => {
      const sel = wire.spec.podSelector.matchLabels as Record<string, string>
      if (!Object.entries(sel).every(([k, v]) => to[k] === v)) return true // not selected: not isolated
      return (wire.spec.ingress as { from: { podSelector: { matchLabels: Record<string, string> } }[] }[]).some((r) =>
        r.from.some((f) => Object.entries(f.podSelector.matchLabels).every(([k, v]) => from[k] === v)),
      )
    }
    assert.equal(admits(gateway, session), true, 'the gateway reaches a session')
    assert.equal(admits(session, session), false, 'a session does not reach another')
    assert.equal(admits({ app: 'other' }, session), false, 'no other pod reaches a session')
    // On the cluster: made at init; an edit by hand is undone at the next start.
    await provider({ gatewayPodLabels: { app: 'studiopool-gateway' } })
    const made = api.get('networkpolicies', NS, 'studiopool-sessions')!
    assert.deepEqual(made.spec, wire.spec)
    api.deleteBehindTheBack('networkpolicies', NS, 'studiopool-sessions')
    await provider({ gatewayPodLabels: { app: 'studiopool-gateway' } })
    assert.deepEqual(api.get('networkpolicies', NS, 'studiopool-sessions')!.spec, wire.spec, 'made again')
    const p = await provider({ gatewayPodLabels: { app: 'studiopool-gateway', tier: 'edge' } })
    assert.deepEqual(
      api.get('networkpolicies', NS, 'studiopool-sessions')!.spec.ingress[0].from[0].podSelector.matchLabels,
      { app: 'studiopool-gateway', tier: 'edge' },
      'a changed gateway selector replaces the policy',
    )
    assert.equal(p.isolation().isolated, true)
    assert.match(p.isolation().notes.join('\n'), /NetworkPolicy studiopool-sessions/)
  })

  it('graceful deletion: a destroyed pod is terminated at once for the pool, and a create of the same id waits for it to go', async () => {
    const slow = await startFakeKubeApi({ podDeleteMs: 400 })
    const p = new KubernetesProvider({
      poolId: POOL,
      dataDir: dir,
      settings: { kubeconfig: slow.writeKubeconfig(mkdtempSync(join(dir, 'g-'))), namespace: NS, retryBackoff: 50 },
      log,
    })
    try {
      await p.init(op)
      const s = spec(template())
      const first = await p.create(s, op)
      await p.destroy(first.ref, op)
      assert.ok(
        slow.get('pods', NS, first.ref.split('/')[0]!)?.metadata.deletionTimestamp,
        'still terminating on the cluster',
      )
      assert.equal(
        (await p.describe([first.ref], op)).get(first.ref)?.state,
        'terminated',
        'ended for the pool at once',
      )
      const t0 = Date.now()
      const second = await p.create(s, op)
      assert.ok(Date.now() - t0 >= 300, 'the create waited for the terminating pod of that name')
      assert.notEqual(second.ref, first.ref)
      assert.equal(slow.list('pods', NS).length, 1, 'one pod, the new one')
      assert.equal(
        slow.requests.filter((r) => r.method === 'POST' && r.resource === 'pods' && r.status === 409).length,
        0,
        'never sent into a 409',
      )
    } finally {
      await p.close()
      await slow.stop()
    }
  })

  it('a pod that ended and was not replaced (a free session evicted) is deleted after lostRetention, not left to pile up', async () => {
    let now = Date.now()
    const p = new KubernetesProvider(
      {
        poolId: POOL,
        dataDir: dir,
        settings: { kubeconfig: api.writeKubeconfig(dir), namespace: NS, retryBackoff: 50, lostRetention: '10m' },
        log,
      },
      { now: () => now },
    )
    providers.push(p)
    await p.init(op)
    const inst = await p.create(spec(template()), op)
    const name = inst.ref.split('/')[0]!
    await waitFor('running', async () => (await p.describe([inst.ref], op)).get(inst.ref)?.state === 'running')
    api.evict(NS, name)
    await waitFor(
      'listed as ended',
      async () => (await p.describe([inst.ref], op)).get(inst.ref)?.state === 'terminated',
    )
    now += 9 * 60_000
    await p.list(op)
    assert.ok(api.get('pods', NS, name), 'kept within lostRetention (the pool may still replace it)')
    now += 2 * 60_000
    await p.list(op)
    await waitFor('the ended pod to be deleted', () => !api.get('pods', NS, name))
    assert.equal((await p.describe([inst.ref], op)).get(inst.ref)?.state ?? 'terminated', 'terminated')
  })
})
