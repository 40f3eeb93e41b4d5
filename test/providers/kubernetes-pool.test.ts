/**
 * The pool engine (PoolService + Worker over a real SQLite store) with the kubernetes provider and
 * its official client, against the in-process fake API server (test/helpers/fake-kube-api.ts) that
 * plays the API server, the scheduler and the kubelet at the HTTP wire level: what a user notices
 * when pods are lost, the API server goes away, studiopool restarts, or the cluster must grow.
 * Pods "run" at 127.0.0.1 on the port of an app stub the readiness probe reaches.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { loadConfig } from '../../src/config/load.js'
import type { Instance } from '../../src/domain/instance.js'
import { RouteHub } from '../../src/gateway/route-hub.js'
import { PoolService } from '../../src/pool/pool-service.js'
import { recoverFromProviders } from '../../src/pool/recover.js'
import { Worker } from '../../src/pool/worker.js'
import { KubernetesProvider } from '../../src/providers/kubernetes/index.js'
import type { Store } from '../../src/store/store.js'
import { startAppStub } from '../api/helpers.js'
import { startFakeKubeApi, type FakeKubeApi } from '../helpers/fake-kube-api.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { waitFor } from '../helpers/wait.js'

const POOL = 'k8s-pool'
const NS = 'sessions'
const OUTAGE_MS = 30_000
const silent = pino({ level: 'silent' })

interface Engine {
  pool: PoolService
  worker: Worker
  provider: KubernetesProvider
  close(): Promise<void>
}

describe('pool over kubernetes (fake API server at the wire level)', { timeout: 300_000 }, () => {
  let api: FakeKubeApi
  let app: { url: string; close(): Promise<void> }
  let store: Store
  let dir: string
  let kubeconfig: string
  const engines: Engine[] = []

  function yaml(templateName = 'nb', orphanGrace = '10m'): string {
    const port = new URL(app.url).port
    const k8s = `{ image: "quay.io/jupyter/base-notebook:2025-01-06", resources: { requests: { cpu: 100m, memory: 256Mi }, limits: { memory: 1Gi } } }`
    const home = `{ image: "quay.io/jupyter/base-notebook:2025-01-06", home: { mountPath: /home/jovyan } }`
    return `
pool: { id: ${POOL}, maxInstances: 100 }
worker: { enabled: false, orphanGrace: ${orphanGrace} }
providers:
  kubernetes: { kubeconfig: "${kubeconfig}", namespace: ${NS}, retryBackoff: 100ms, maxRetryBackoff: 1s, homeStorageClass: fast-rwo, homeSize: 5Gi }
templates:
  demo: { provider: kubernetes, minFree: 0, port: ${port}, healthPath: /, startTimeout: 10m, kubernetes: ${k8s} }
  ${templateName}: { provider: kubernetes, minFree: 0, port: ${port}, healthPath: /, startTimeout: 10m, kubernetes: ${home} }
`
  }

  async function makeEngine(text = yaml()): Promise<Engine> {
    const config = loadConfig({ text, env: {}, cwd: '/tmp' })
    const provider = new KubernetesProvider({
      poolId: POOL,
      dataDir: dir,
      settings: config.providers.kubernetes ?? {},
      log: silent,
    })
    await provider.init({ log: silent })
    const providers = new Map([['kubernetes', provider]])
    const pool = new PoolService({ config, store, providers, routes: new RouteHub(), log: silent })
    const worker = new Worker({ config, store, pool, providers, log: silent })
    const e: Engine = {
      pool,
      worker,
      provider,
      close: async () => {
        await worker.stop()
        await pool.close()
        await provider.close()
      },
    }
    engines.push(e)
    return e
  }

  let engine: Engine

  before(async () => {
    api = await startFakeKubeApi()
    app = await startAppStub()
    dir = mkdtempSync(join(tmpdir(), 'studiopool-k8s-pool-'))
    kubeconfig = api.writeKubeconfig(dir)
    store = await STORE_KINDS.find((k) => k.name === 'sqlite')!.make({ poolId: POOL })
    engine = await makeEngine()
  })
  after(async () => {
    for (const e of engines) await e.close().catch(() => {})
    await api?.stop()
    await app?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  async function cycleUntil(id: string, pred: (i: Instance) => boolean, what: string, e = engine): Promise<Instance> {
    return waitFor(
      what,
      async () => {
        await e.worker.runOnce()
        const i = await store.getInstance(id)
        return i && pred(i) ? i : null
      },
      60_000,
    )
  }

  async function readySession(user: string, template = 'demo', e = engine): Promise<Instance> {
    const r = await e.pool.request({ userId: user, template })
    return cycleUntil(r.instance.id, (i) => i.state === 'ready', `${user}'s session to be ready`, e)
  }

  const podOf = (i: Instance) => i.providerRef!.split('/')[0]!

  async function endSession(i: Instance): Promise<void> {
    await engine.pool.release(i.id, 'user')
    await cycleUntil(i.id, (x) => x.state === 'terminated', `${i.id} to end`)
  }

  for (const [what, lose, reason] of [
    ['evicted (node pressure)', (pod: string) => api.evict(NS, pod), /evicted.*low on resource: memory/],
    ['OOM-killed', (pod: string) => api.oomKill(NS, pod), /OOMKilled/],
    ['on a lost node', (pod: string) => api.nodeLost(NS, pod), /node was lost/],
    [
      'deleted behind our back',
      (pod: string) => api.deleteBehindTheBack('pods', NS, pod),
      /deleted outside studiopool/,
    ],
  ] as const) {
    it(`a pod ${what} is replaced under the same instance id and URL, with the reason shown`, async () => {
      const s = await readySession(`user-${what.length}`)
      const route = await engine.pool.request({ userId: s.ownerId!, template: 'demo' })
      lose(podOf(s))
      const back = await cycleUntil(
        s.id,
        (i) => i.state === 'ready' && i.generation === s.generation + 1,
        'the session to be ready again on a new pod',
      )
      assert.equal(back.id, s.id, 'same instance id')
      assert.equal(back.ownerId, s.ownerId, 'same owner')
      assert.notEqual(back.providerRef, s.providerRef, 'a new pod')
      const again = await engine.pool.request({ userId: s.ownerId!, template: 'demo' })
      assert.equal(again.instance.id, route.instance.id, 'the user is handed the same session (same URL)')
      const replaced = (await store.listAudit({ instanceId: s.id })).find((a) => a.event === 'replaced')
      assert.ok(replaced, 'a replaced audit row')
      assert.match(String(replaced.detail.why), reason, "the reason is the pod's, in words")
      // The lost pod is cleaned up once its replacement is made (a lost node's pod included).
      await waitFor('the lost pod to be deleted', () => !api.get('pods', NS, podOf(s)))
      await endSession(back)
    })
  }

  it(`the API server unreachable for ${OUTAGE_MS / 1000} s: sessions stay, nothing is deleted, and what changed meanwhile is reconciled after`, async () => {
    const a = await readySession('ann')
    const b = await readySession('ben')
    const before = api.requests.length
    api.unreachableFor(OUTAGE_MS)
    // While it is away, the kubelet evicts ben's pod: nobody can tell studiopool.
    api.evict(NS, podOf(b))
    const until = Date.now() + OUTAGE_MS - 1000
    let cycles = 0
    while (Date.now() < until) {
      await engine.worker.runOnce()
      cycles++
      for (const s of [a, b]) {
        const now = (await store.getInstance(s.id))!
        assert.equal(now.state, 'ready', `${s.ownerId}'s session stays ready`)
        assert.equal(now.providerRef, s.providerRef)
        assert.equal(now.generation, s.generation)
      }
      await new Promise((r) => setTimeout(r, 250))
    }
    assert.ok(cycles > 10, `worker cycles ran during the outage (${cycles})`)
    assert.equal(
      api.requests.slice(before).filter((r) => r.method === 'DELETE').length,
      0,
      'nothing was deleted while the API did not answer',
    )
    api.reachable()
    const back = await cycleUntil(
      b.id,
      (i) => i.state === 'ready' && i.generation === b.generation + 1,
      "ben's evicted session to be replaced",
    )
    assert.equal(back.id, b.id)
    const annNow = (await store.getInstance(a.id))!
    assert.equal(annNow.providerRef, a.providerRef, "ann's session was never touched")
    assert.equal(annNow.state, 'ready')
    await endSession(a)
    await endSession(back)
  })

  it('a server restart: running pods are adopted as they are, an orphan is reaped only after the grace', async () => {
    const first = await makeEngine(yaml('nb', '2s'))
    const r = await first.pool.request({ userId: 'cleo', template: 'demo' })
    const s = await cycleUntil(r.instance.id, (i) => i.state === 'ready', "cleo's session", first)
    // A pod of this pool the store does not know: a create whose answer was lost (ShinyProxy#596).
    const orphan = await first.provider.create(
      {
        id: 'orphanorphanorphanor',
        poolId: POOL,
        template: first.pool.template('demo'),
        basePath: '/s/orphanorphanorphanor/',
        labels: {
          'studiopool:pool': POOL,
          'studiopool:instance': 'orphanorphanorphanor',
          'studiopool:template': 'demo',
        },
        progressUrl: 'http://127.0.0.1:9/p',
        progressToken: 't',
        appToken: 'a',
        ownerId: null,
        sessionUrl: 'http://127.0.0.1:9/s/orphanorphanorphanor/',
      },
      { log: silent },
    )
    await first.close()
    const podsBefore = api.list('pods', NS).length
    const second = await makeEngine(yaml('nb', '2s'))
    const t0 = Date.now()
    await second.worker.runOnce()
    const adopted = (await store.getInstance(s.id))!
    assert.equal(adopted.state, 'ready', 'the session is still ready after the restart')
    assert.equal(adopted.providerRef, s.providerRef, 'the same pod, adopted')
    assert.ok(api.get('pods', NS, orphan.ref.split('/')[0]!), 'the orphan is not reaped before the grace')
    assert.equal(api.list('pods', NS).length, podsBefore, 'no pod made or deleted by the restart')
    await waitFor(
      'the orphan to be reaped',
      async () => {
        await second.worker.runOnce()
        return !api.get('pods', NS, orphan.ref.split('/')[0]!)
      },
      30_000,
    )
    assert.ok(Date.now() - t0 >= 1900, 'reaped after the grace, not before')
    assert.ok(api.get('pods', NS, podOf(s)), "cleo's pod is still there")
    await second.pool.release(s.id, 'user')
    await cycleUntil(s.id, (x) => x.state === 'terminated', 'the session to end', second)
    await second.close()
  })

  it('a user keeps one claim across two sessions and a template rename; only the admin action deletes it', async () => {
    const s1 = await readySession('dora', 'nb')
    const claims = () =>
      api.list('persistentvolumeclaims', NS).filter((c) => c.metadata.annotations?.['studiopool.io/owner'] === 'dora')
    assert.equal(claims().length, 1, 'a claim was made')
    const claim = claims()[0]!
    assert.match(claim.metadata.name, /^studiopool-home-dora-[0-9a-f]{8}$/)
    assert.equal(claim.spec.storageClassName, 'fast-rwo')
    assert.equal(claim.spec.resources.requests.storage, '5Gi')
    const mounts = (i: Instance) =>
      api.get('pods', NS, podOf(i))!.spec.volumes.map((v: any) => v.persistentVolumeClaim?.claimName)
    assert.deepEqual(mounts(s1), [claim.metadata.name])
    assert.equal(
      await engine.provider.deleteHome(claim.metadata.name, { log: silent }),
      'in-use',
      'not deleted while mounted',
    )
    await endSession(s1)
    assert.equal(claims().length, 1, 'the claim outlives the session')
    const s2 = await readySession('dora', 'nb')
    assert.deepEqual(mounts(s2), [claim.metadata.name], 'the second session mounts the same claim')
    await endSession(s2)
    // The template is renamed (nb → notebook): a new server with the new configuration.
    const renamed = await makeEngine(yaml('notebook'))
    const s3 = await readySession('dora', 'notebook', renamed)
    assert.deepEqual(mounts(s3), [claim.metadata.name], 'the renamed template mounts the same claim')
    assert.equal(claims().length, 1)
    assert.equal(claims()[0]!.metadata.uid, claim.metadata.uid, 'the very same claim, never made again')
    await renamed.pool.release(s3.id, 'user')
    await cycleUntil(s3.id, (x) => x.state === 'terminated', 'the session to end', renamed)
    assert.equal(api.requests.filter((r) => r.resource === 'persistentvolumeclaims' && r.method === 'DELETE').length, 0)
    const listed = await renamed.provider.listHomes({ log: silent }, 'dora')
    assert.deepEqual(
      listed.homes.map((h) => h.ref),
      [claim.metadata.name],
    )
    await waitFor('the pod to be gone', () => !api.list('pods', NS).some((p) => p.spec.volumes?.length))
    assert.equal(await renamed.provider.deleteHome(claim.metadata.name, { log: silent }), 'deleted')
    assert.equal(claims().length, 0)
    assert.equal(await renamed.provider.deleteHome(claim.metadata.name, { log: silent }), 'absent')
    await renamed.close()
  })

  it("an unschedulable pod shows the autoscaler's message while a node is added, then starts", async () => {
    api.autoRun = false
    try {
      const r = await engine.pool.request({ userId: 'eve', template: 'demo' })
      const pod = await waitFor('the pod to be created', async () => {
        await engine.worker.runOnce()
        const i = await store.getInstance(r.instance.id)
        return i?.providerRef ? podOf(i) : null
      })
      api.unschedulable(NS, pod, '0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available')
      const waiting = await cycleUntil(
        r.instance.id,
        (i) => /waiting for a node/.test(i.progressMessage ?? ''),
        'the scheduler message',
      )
      assert.match(waiting.progressMessage!, /3 Insufficient cpu/)
      api.event(NS, pod, {
        type: 'Normal',
        reason: 'TriggeredScaleUp',
        message: 'pod triggered scale-up: [{eks-general 3->4 (max: 10)}]',
        component: 'cluster-autoscaler',
      })
      const scaling = await cycleUntil(
        r.instance.id,
        (i) => /autoscaler/.test(i.progressMessage ?? ''),
        "the autoscaler's message",
      )
      assert.equal(scaling.state, 'starting', 'launch progress, not a failure')
      assert.match(
        scaling.progressMessage!,
        /the cluster autoscaler is adding a node: pod triggered scale-up: \[\{eks-general 3->4/,
      )
      api.waiting(
        NS,
        pod,
        'ErrImagePull',
        'rpc error: code = NotFound desc = failed to pull image "quay.io/jupyter/base-notebook:2025-01-06"',
      )
      const pulling = await cycleUntil(
        r.instance.id,
        (i) => /ErrImagePull/.test(i.progressMessage ?? ''),
        'the image pull error as the reason',
      )
      assert.equal(pulling.state, 'starting')
      // The node has come up and the image pulled: the pod runs.
      api.run(NS, pod)
      const ready = await cycleUntil(r.instance.id, (i) => i.state === 'ready', 'the session to start')
      assert.equal(ready.generation, r.instance.generation, 'the same pod, never replaced while it waited')
      await endSession(ready)
    } finally {
      api.autoRun = true
    }
  })

  it('steady state: worker cycles make no API call per instance (list and describe answer from the watch cache)', async () => {
    const s = [await readySession('fay'), await readySession('gus'), await readySession('hal')]
    const before = api.requests.length
    for (let i = 0; i < 20; i++) await engine.worker.runOnce()
    const during = api.requests.slice(before).filter((r) => !r.watch)
    assert.deepEqual(during, [], 'no GET, LIST, PATCH or DELETE during 20 cycles')
    for (const x of s) await endSession(x)
  })

  it('studiopool recover rebuilds the store from the pods: instance, template, generation and the exact owner id', async () => {
    const owner = 'Ida Müller <ida@example.org>'
    const s = await readySession(owner)
    const fresh = await STORE_KINDS.find((k) => k.name === 'sqlite')!.make({ poolId: POOL })
    const config = loadConfig({ text: yaml(), env: {}, cwd: '/tmp' })
    const report = await recoverFromProviders({
      config,
      store: fresh,
      providers: new Map([['kubernetes', engine.provider]]),
      log: silent,
    })
    const mine = report.instances.find((i) => i.instanceId === s.id)
    assert.ok(mine, 'the session is recovered')
    assert.equal(mine.ownerId, owner, 'the owner id exactly, though no label value can hold it')
    assert.equal(mine.template, 'demo')
    assert.equal(mine.ref, s.providerRef)
    const row = (await fresh.getInstance(s.id))!
    assert.equal(row.ownerId, owner)
    assert.equal(row.generation, s.generation)
    await endSession(s)
  })
})
