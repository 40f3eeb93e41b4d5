/**
 * The docker provider against a real Docker Engine (a private dockerd, test/helpers/docker.ts):
 * per-user home volumes kept across sessions, a killed container listed as terminated with its
 * reason, adoption by a new provider object after a restart, listing by label (orphans of this
 * pool, never another pool's), the image checks, and what a session sees from inside.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:net'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import type { TemplateConfig } from '../../src/config/types.js'
import { ProviderError } from '../../src/domain/errors.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { DockerProvider, userSlug } from '../../src/providers/docker/index.js'
import {
  LABEL_INSTANCE,
  LABEL_OWNER,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type OperationOptions,
  type ProviderInstance,
} from '../../src/providers/provider.js'
import { dockerSkipReason, startDockerd, testAppSettings, TEST_IMAGE, type TestDockerd } from '../helpers/docker.js'
import { makeTemplate } from '../helpers/template.js'
import { waitFor } from '../helpers/wait.js'

const skip = dockerSkipReason() ?? undefined
const POOL = 'docker-test-pool'
const log = pino({ level: 'silent' })
const op: OperationOptions = { log }

describe('docker provider (real Docker Engine)', { skip, timeout: 300_000 }, () => {
  let docker: TestDockerd
  let provider: DockerProvider
  const providers: DockerProvider[] = []

  function makeProvider(poolId = POOL): DockerProvider {
    const p = new DockerProvider({
      poolId,
      dataDir: '/nonexistent',
      settings: { hosts: [{ name: 'h1', url: docker.url }], requestTimeout: '20s', pullTimeout: '30s' },
      log,
    })
    providers.push(p)
    return p
  }

  const demo = makeTemplate({ name: 'demo', provider: 'docker', minFree: 0, settings: testAppSettings() })
  const withHome = makeTemplate({
    name: 'notebook',
    provider: 'docker',
    minFree: 0,
    settings: testAppSettings({ home: { volume: 'studiopool-home-{{userSlug}}', mountPath: '/home/session' } }),
  })

  function spec(
    template: TemplateConfig,
    ownerId: string | null = null,
    id = newInstanceId(),
    poolId = POOL,
  ): InstanceSpec {
    return {
      id,
      poolId,
      template,
      basePath: `/s/${id}/`,
      labels: {
        [LABEL_POOL]: poolId,
        [LABEL_INSTANCE]: id,
        [LABEL_TEMPLATE]: template.name,
        'studiopool:generation': '0',
        ...(ownerId ? { [LABEL_OWNER]: ownerId } : {}),
      },
      progressUrl: `http://127.0.0.1:9/api/v1/instances/${id}/progress`,
      progressToken: 'progress-token',
      appToken: 'app-token',
      ownerId,
      sessionUrl: `http://gateway.test/s/${id}/`,
    }
  }

  /** GET on the session's published port, once it answers. */
  async function app<T = Record<string, unknown>>(inst: ProviderInstance, path: string): Promise<T> {
    assert.ok(inst.address, 'the instance has an address')
    return waitFor(
      `${inst.address}${path}`,
      async () => {
        const res = await fetch(new URL(path, inst.address!), { signal: AbortSignal.timeout(5000) })
        return res.ok ? ((await res.json()) as T) : undefined
      },
      20_000,
    )
  }

  async function containerIdOf(inst: ProviderInstance): Promise<string> {
    return inst.ref.split('/')[1]!
  }

  before(async () => {
    docker = await startDockerd()
    provider = makeProvider()
    await provider.init(op)
  })

  after(async () => {
    for (const p of providers) await p.close()
    await docker?.stop()
  })

  it('runs the session as the template user, with the identity environment and no Docker socket', async () => {
    const inst = await provider.create(spec(demo, 'alice'), op)
    assert.equal(inst.state, 'running')
    assert.match(inst.address ?? '', /^http:\/\/127\.0\.0\.1:\d+$/, 'published on the host loopback')
    const me = await app<{ uid: number; instanceId: string; user: string; sessionUrl: string }>(inst, '/')
    assert.equal(me.uid, 1000, 'not root')
    assert.equal(me.instanceId, inst.instanceId)
    assert.equal(me.user, 'alice')
    assert.equal(me.sessionUrl, `http://gateway.test/s/${inst.instanceId}/`)
    // Sanity: the check does see what is there.
    assert.deepEqual(await app(inst, `/exists?path=${encodeURIComponent('/usr/bin/node')}`), { exists: true })
    // No Docker socket; none of the server's files (its checkout, the daemon's data root); none of its processes.
    for (const path of [
      '/var/run/docker.sock',
      '/run/docker.sock',
      docker.socket,
      docker.dir,
      process.cwd(),
      `/proc/${process.pid}/environ`,
    ]) {
      assert.deepEqual(
        await app(inst, `/exists?path=${encodeURIComponent(path)}`),
        { exists: false },
        `${path} is not visible in the container`,
      )
    }
    const c = await docker.api<{
      HostConfig: { CapDrop: string[]; SecurityOpt: string[]; PidsLimit: number; Memory: number; NetworkMode: string }
      Config: { Labels: Record<string, string> }
    }>('GET', `/containers/${await containerIdOf(inst)}/json`)
    assert.deepEqual(c.body.HostConfig.CapDrop, ['ALL'])
    assert.deepEqual(c.body.HostConfig.SecurityOpt, ['no-new-privileges'])
    assert.equal(c.body.HostConfig.PidsLimit, 1024)
    assert.equal(c.body.HostConfig.Memory, 256 * 1024 * 1024)
    assert.equal(c.body.HostConfig.NetworkMode, provider.networkName)
    assert.equal(c.body.Config.Labels['studiopool.pool'], POOL, 'Docker-style label keys')
    assert.equal(c.body.Config.Labels['studiopool.owner'], 'alice')
    assert.equal(c.body.Config.Labels['studiopool.generation'], '0')
    const net = await docker.api<{ Options: Record<string, string> }>('GET', `/networks/${provider.networkName}`)
    assert.equal(net.body.Options['com.docker.network.bridge.enable_icc'], 'false')
    await provider.destroy(inst.ref, op)
  })

  it('a session cannot reach another session, nor a host-loopback port', async () => {
    const a = await provider.create(spec(demo, 'alice'), op)
    const b = await provider.create(spec(demo, 'bob'), op)
    await app(b, '/')
    const bInfo = await docker.api<{
      NetworkSettings: { Networks: Record<string, { IPAddress: string; Gateway: string }> }
    }>('GET', `/containers/${await containerIdOf(b)}/json`)
    const bNet = bInfo.body.NetworkSettings.Networks[provider.networkName]!
    const bPort = new URL(b.address!).port
    // A listener of the host on loopback only, as the server's internal ports are.
    const server: Server = createServer((s) => s.end())
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const hostPort = (server.address() as { port: number }).port
    try {
      const probe = async (host: string, port: string | number): Promise<string> =>
        (await app<{ result: string }>(a, `/probe?host=${host}&port=${port}`)).result
      // Sanity: the probe does connect where it may (its own port).
      assert.equal(await probe('127.0.0.1', 8000), 'connected')
      assert.notEqual(await probe(bNet.IPAddress, 8000), 'connected', "alice reaches bob's container directly")
      assert.notEqual(
        await probe(bNet.Gateway, bPort),
        'connected',
        "alice reaches bob's published port through the host",
      )
      assert.notEqual(
        await probe(bNet.Gateway, hostPort),
        'connected',
        'alice reaches a host listener bound to 127.0.0.1',
      )
      assert.notEqual(await probe('127.0.0.1', bPort), 'connected')
    } finally {
      server.close()
      await provider.destroy(a.ref, op)
      await provider.destroy(b.ref, op)
    }
  })

  it("keeps a user's home volume across sessions and after destroy; other users get their own", async () => {
    assert.deepEqual(provider.validateTemplate(withHome), [])
    const first = await provider.create(spec(withHome, 'carol@example.org'), op)
    assert.deepEqual(await app(first, '/write?name=notes.txt&text=kept'), { ok: true })
    await provider.destroy(first.ref, op)
    const volume = `studiopool-home-${userSlug('carol@example.org')}`
    const vol = await docker.api<{ Labels: Record<string, string> }>('GET', `/volumes/${volume}`)
    assert.equal(vol.status, 200, 'the home volume outlives the session')
    assert.equal(vol.body.Labels['studiopool.owner'], 'carol@example.org')
    assert.equal(vol.body.Labels['studiopool.pool'], POOL)

    const second = await provider.create(spec(withHome, 'carol@example.org'), op)
    assert.deepEqual(
      await app(second, '/read?name=notes.txt'),
      { text: 'kept' },
      "the next session has the user's file",
    )
    const other = await provider.create(spec(withHome, 'dave'), op)
    const res = await app<{ error?: string }>(other, '/').then(() =>
      fetch(new URL('/read?name=notes.txt', other.address!)),
    )
    assert.equal(res.status, 500, "another user does not see carol's file")

    const listed = await provider.listHomeVolumes(op, 'carol@example.org')
    assert.deepEqual(
      listed.map((v) => v.name),
      [volume],
    )
    await provider.destroy(second.ref, op)
    await provider.destroy(other.ref, op)
    await provider.deleteHomeVolume('h1', volume, op)
    assert.equal((await docker.api('GET', `/volumes/${volume}`)).status, 404, 'deleted only by the explicit call')
  })

  it('a home template refuses a warm pool and a session without its user', async () => {
    const warm = makeTemplate({ ...withHome, minFree: 1 })
    assert.match(provider.validateTemplate(warm).join('; '), /minFree: 0/)
    await assert.rejects(
      provider.create(spec(withHome, null), op),
      (err: unknown) => err instanceof ProviderError && /needs its user/.test(err.message),
    )
  })

  it('docker kill → listed as terminated with the reason; create replaces it under the same instanceId', async () => {
    const s = spec(demo, 'erin')
    const inst = await provider.create(s, op)
    await app(inst, '/')
    const killed = await docker.api('POST', `/containers/${await containerIdOf(inst)}/kill?signal=KILL`)
    assert.equal(killed.status, 204)
    const listed = await waitFor(
      'the killed container to be listed as terminated',
      async () => (await provider.list(op)).find((i) => i.ref === inst.ref && i.state === 'terminated'),
      10_000,
    )
    assert.match(listed.message ?? '', /killed by signal 9 \(SIGKILL\)/)
    assert.equal(listed.address, null)
    const described = (await provider.describe([inst.ref], op)).get(inst.ref)
    assert.equal(described?.state, 'terminated')
    const replacement = await provider.create({ ...s, labels: { ...s.labels, 'studiopool:generation': '1' } }, op)
    assert.notEqual(replacement.ref, inst.ref)
    assert.equal(replacement.instanceId, s.id)
    assert.equal(replacement.labels['studiopool:generation'], '1')
    assert.equal((await provider.describe([inst.ref], op)).has(inst.ref), false, 'the dead container was removed')
    await provider.destroy(replacement.ref, op)
  })

  it('an app that exits on its own is reported with its exit code', async () => {
    const t = makeTemplate({
      name: 'crash',
      provider: 'docker',
      minFree: 0,
      settings: testAppSettings({ command: ['node', '-e', 'process.exit(3)'] }),
    })
    const inst = await provider.create(spec(t), op)
    const listed = await waitFor(
      'the exited container',
      async () => (await provider.list(op)).find((i) => i.ref === inst.ref && i.state === 'terminated'),
      10_000,
    )
    assert.equal(listed.message, 'the container exited with code 3')
    await provider.destroy(inst.ref, op)
  })

  it('an OOM kill is reported as such, with the memory limit', async () => {
    const t = makeTemplate({
      name: 'hog',
      provider: 'docker',
      minFree: 0,
      settings: testAppSettings({ memory: '64m' }),
    })
    const inst = await provider.create(spec(t), op)
    await app(inst, '/alloc')
    const listed = await waitFor(
      'the OOM-killed container',
      async () => (await provider.list(op)).find((i) => i.ref === inst.ref && i.state === 'terminated'),
      30_000,
    )
    assert.equal(listed.message, 'the container was killed: out of memory (memory limit 64 MiB)')
    await provider.destroy(inst.ref, op)
  })

  it('two server processes creating one instance at once make one container', async () => {
    const s = spec(demo, 'gina')
    const [one, two] = [makeProvider(), makeProvider()]
    const [x, y] = await Promise.all([one.create(s, op), two.create(s, op)])
    assert.equal(x.ref, y.ref)
    const all = (
      await docker.api<unknown[]>(
        'GET',
        `/containers/json?all=true&filters=${encodeURIComponent(JSON.stringify({ label: [`studiopool.instance=${s.id}`] }))}`,
      )
    ).body
    assert.equal(all.length, 1)
    await one.destroy(x.ref, op)
  })

  it('a new provider object (server restart) finds and adopts the running container', async () => {
    const s = spec(demo, 'frank')
    const inst = await provider.create(s, op)
    const restarted = makeProvider()
    await restarted.init(op)
    const found = (await restarted.list(op)).find((i) => i.instanceId === s.id)
    assert.ok(found, 'listed after the restart')
    assert.equal(found.ref, inst.ref)
    assert.equal(found.state, 'running')
    assert.equal(found.address, inst.address)
    assert.equal(found.labels[LABEL_OWNER], 'frank')
    const again = await restarted.create(s, op)
    assert.equal(again.ref, inst.ref, 'create after a restart adopts, never duplicates')
    const all = (
      await docker.api<unknown[]>(
        'GET',
        `/containers/json?all=true&filters=${encodeURIComponent(JSON.stringify({ label: [`studiopool.instance=${s.id}`] }))}`,
      )
    ).body
    assert.equal(all.length, 1)
    await restarted.destroy(inst.ref, op)
  })

  it("lists containers of this pool the store does not know (orphans), never another pool's", async () => {
    const other = makeProvider('another-pool')
    await other.init(op)
    const theirs = await other.create(spec(demo, null, newInstanceId(), 'another-pool'), op)
    // An orphan: a container of ours created by a server that died before recording it.
    const orphanId = newInstanceId()
    const orphan = await makeProvider().create(spec(demo, null, orphanId), op)
    const listed = await provider.list(op)
    assert.ok(
      listed.some((i) => i.ref === orphan.ref && i.instanceId === orphanId && i.state === 'running'),
      'the orphan is listed',
    )
    assert.ok(!listed.some((i) => i.ref === theirs.ref), "another pool's container is not")
    for (const i of listed) assert.equal(i.labels[LABEL_POOL], POOL)
    await provider.destroy(theirs.ref, op) // not ours: destroy leaves it alone
    assert.equal((await other.describe([theirs.ref], op)).get(theirs.ref)?.state, 'running')
    await other.destroy(theirs.ref, op)
    await provider.destroy(orphan.ref, op)
  })

  it('a missing image (pullPolicy never, or a failed pull), and an image that runs as root, are clear errors', async () => {
    const missing = makeTemplate({
      name: 'missing',
      provider: 'docker',
      minFree: 0,
      settings: testAppSettings({ image: 'rocker/rstudio:4.4.1' }),
    })
    await assert.rejects(
      provider.create(spec(missing), op),
      (err: unknown) =>
        err instanceof ProviderError &&
        err.message.includes('"rocker/rstudio:4.4.1"') &&
        err.message.includes('pullPolicy is never') &&
        !err.retryable,
    )
    // ifNotPresent: a pull, which fails here (no registry can be reached; elsewhere the image does not exist).
    const pulling = makeTemplate({
      name: 'pull',
      provider: 'docker',
      minFree: 0,
      settings: testAppSettings({ image: 'studiopool/does-not-exist:1', pullPolicy: 'ifNotPresent' }),
    })
    await assert.rejects(
      provider.create(spec(pulling), op),
      (err: unknown) =>
        err instanceof ProviderError &&
        err.message.includes('cannot pull image "studiopool/does-not-exist:1" on h1') &&
        !err.retryable,
    )
    const settings = testAppSettings()
    delete settings.user
    const root = makeTemplate({ name: 'root', provider: 'docker', minFree: 0, settings })
    await assert.rejects(
      provider.create(spec(root), op),
      (err: unknown) => err instanceof ProviderError && err.message.includes(`image "${TEST_IMAGE}" runs as root`),
    )
    const rootOk = makeTemplate({
      name: 'root',
      provider: 'docker',
      minFree: 0,
      settings: testAppSettings({ user: 'root' }),
    })
    const inst = await provider.create(spec(rootOk), op)
    assert.equal((await app<{ uid: number }>(inst, '/')).uid, 0, 'root only because the template says user: root')
    await provider.destroy(inst.ref, op)
  })

  it('validateTemplate lists every problem of the docker settings', () => {
    const bad = makeTemplate({
      provider: 'docker',
      settings: { image: '', memory: 'lots', mounts: [{ type: 'bind', source: '/var/run/docker.sock', target: '/s' }] },
    })
    const problems = provider.validateTemplate(bad)
    assert.ok(
      problems.some((p) => p.startsWith('docker.image')),
      problems.join('; '),
    )
    const sock = makeTemplate({
      provider: 'docker',
      port: 80,
      settings: { image: 'x', mounts: [{ type: 'bind', source: '/var/run/docker.sock', target: '/s' }] },
    })
    assert.match(provider.validateTemplate(sock).join('; '), /never mount the Docker socket/)
    const noPort = makeTemplate({ provider: 'docker', settings: { image: 'x' } })
    assert.match(provider.validateTemplate(noPort).join('; '), /docker\.port/)
  })

  it("reports what it isolates, with the managed network's subnet", () => {
    const report = provider.isolation()
    assert.equal(report.isolated, true)
    assert.equal(report.sessionsReachLoopback, false)
    assert.equal(report.sessionNetworks.length, 1)
    assert.match(report.sessionNetworks[0]!, /^10\.\d+\.\d+\.0\/24$/)
  })
})
