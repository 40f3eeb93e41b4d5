/**
 * The pool and the worker over the docker provider and a real Docker Engine (no HTTP, no
 * gateway): a session's container killed with `docker kill` is replaced under the same
 * instanceId (so the same URL), and the user's file in the home volume is there again; an idle
 * cull removes the container and keeps the volume, and the user's next session has the file.
 *
 * The template is given to the pool as a normalized TemplateConfig, because the configuration
 * schema (src/config/schema.ts) does not list the `docker:` template key yet.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { loadConfig } from '../../src/config/load.js'
import type { Config, TemplateConfig } from '../../src/config/types.js'
import type { Instance } from '../../src/domain/instance.js'
import { RouteHub } from '../../src/gateway/route-hub.js'
import { PoolService } from '../../src/pool/pool-service.js'
import { Worker } from '../../src/pool/worker.js'
import { DockerProvider, userSlug } from '../../src/providers/docker/index.js'
import type { Store } from '../../src/store/store.js'
import { dockerSkipReason, startDockerd, testAppSettings, type TestDockerd } from '../helpers/docker.js'
import { STORE_KINDS } from '../helpers/stores.js'
import { waitFor } from '../helpers/wait.js'

const skip =
  dockerSkipReason() ??
  (STORE_KINDS.some((k) => k.name === 'sqlite') ? undefined : 'the sqlite store is not selected (STORES)')
const log = pino({ level: 'silent' })
const POOL = 'docker-pool-test'

const YAML = `
pool: { id: ${POOL} }
worker: { interval: 200ms, orphanGrace: 10m }
templates:
  notebook:
    provider: fake
    minFree: 0
    maxInstances: 5
    idleTimeout: 3s
    startTimeout: 60s
    healthPath: /
`

describe('pool + worker over the docker provider (real Docker Engine)', { skip, timeout: 300_000 }, () => {
  let docker: TestDockerd
  let provider: DockerProvider
  let store: Store
  let pool: PoolService
  let worker: Worker

  before(async () => {
    docker = await startDockerd()
    provider = new DockerProvider({
      poolId: POOL,
      dataDir: '/nonexistent',
      settings: { hosts: [{ name: 'h1', url: docker.url }] },
      log,
    })
    await provider.init({ log })
    const base = loadConfig({ text: YAML, env: {}, cwd: '/tmp' })
    const template: TemplateConfig = {
      ...base.templates[0]!,
      provider: 'docker',
      settings: testAppSettings({ home: { volume: 'studiopool-home-{{userSlug}}', mountPath: '/home/session' } }),
    }
    assert.deepEqual(provider.validateTemplate(template), [])
    const config: Config = { ...base, templates: [template] }
    store = await STORE_KINDS.find((k) => k.name === 'sqlite')!.make({ poolId: POOL })
    const providers = new Map([['docker', provider]])
    pool = new PoolService({ config, store, providers, routes: new RouteHub(), log })
    worker = new Worker({ config, store, pool, providers, log })
  })

  after(async () => {
    await worker?.stop()
    await pool?.close()
    await provider?.close()
    await docker?.stop()
  })

  async function ready(id: string, generation = 0): Promise<Instance> {
    return waitFor(
      `${id} ready (generation ≥ ${generation})`,
      async () => {
        await worker.runOnce()
        const i = await store.getInstance(id)
        if (i?.state === 'failed') throw new Error(`failed: ${i.failureReason}`)
        return i && i.state === 'ready' && i.generation >= generation ? i : undefined
      },
      60_000,
    )
  }

  async function get<T>(inst: Instance, path: string): Promise<T> {
    const res = await fetch(new URL(path, inst.address!), { signal: AbortSignal.timeout(5000) })
    assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`)
    return (await res.json()) as T
  }

  it('docker kill → replaced under the same instanceId, with the home volume; idle cull keeps the volume', async () => {
    const r = await pool.request({ userId: 'alice', template: 'notebook' })
    const first = await ready(r.instance.id)
    assert.equal(first.ownerId, 'alice')
    assert.deepEqual(await get(first, '/write?name=work.txt&text=survives'), { ok: true })

    const containerId = first.providerRef!.split('/')[1]!
    assert.equal((await docker.api('POST', `/containers/${containerId}/kill?signal=KILL`)).status, 204)
    const replaced = await ready(first.id, first.generation + 1)
    assert.equal(replaced.id, first.id, 'same instanceId, so the same URL')
    assert.equal(replaced.ownerId, 'alice')
    assert.notEqual(replaced.providerRef, first.providerRef, 'a new container')
    assert.deepEqual(
      await get(replaced, '/read?name=work.txt'),
      { text: 'survives' },
      'the file in the home volume is there',
    )
    assert.equal(
      (await docker.api('GET', `/containers/${containerId}/json`)).status,
      404,
      'the killed container was removed',
    )

    // No activity: the idle cull (3 s) ends the session, removes the container, keeps the volume.
    const culled = await waitFor(
      'the idle session to be culled',
      async () => {
        await worker.runOnce()
        const i = await store.getInstance(first.id)
        return i && i.state === 'terminated' ? i : undefined
      },
      60_000,
    )
    assert.equal(culled.endReason, 'idle')
    const newRef = replaced.providerRef!.split('/')[1]!
    await waitFor(
      'the culled container to be removed',
      async () => (await docker.api('GET', `/containers/${newRef}/json`)).status === 404,
      30_000,
    )
    assert.equal(
      (await docker.api('GET', `/volumes/studiopool-home-${userSlug('alice')}`)).status,
      200,
      'the home volume is kept',
    )

    const next = await pool.request({ userId: 'alice', template: 'notebook' })
    assert.notEqual(next.instance.id, first.id, 'a new session')
    const again = await ready(next.instance.id)
    assert.deepEqual(
      await get(again, '/read?name=work.txt'),
      { text: 'survives' },
      "the user's next session has the file",
    )
    await pool.release(again.id, 'user')
    await waitFor(
      'the released session to be destroyed',
      async () => {
        await worker.runOnce()
        return (await provider.list({ log })).every((i) => i.state === 'terminated')
      },
      30_000,
    )
  })
})
