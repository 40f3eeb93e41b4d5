/**
 * The docker provider with several Docker hosts: two private daemons on this machine, each with
 * its own socket and data root (test/helpers/docker.ts). Placement spreads sessions and respects
 * each host's maxInstances; a host that stops answering (its dockerd SIGSTOPped, then stopped
 * for good) has its sessions reported lost and is used again when it answers; the per-host limit
 * on concurrent starts holds (seen through a proxy that holds container creates, not by timing).
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { ProviderError } from '../../src/domain/errors.js'
import { newInstanceId } from '../../src/domain/ids.js'
import { DockerProvider } from '../../src/providers/docker/index.js'
import {
  LABEL_INSTANCE,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type OperationOptions,
  type ProviderInstance,
} from '../../src/providers/provider.js'
import { startDockerProxy, type DockerProxy } from '../helpers/docker-proxy.js'
import { dockerSkipReason, startDockerd, testAppSettings, type TestDockerd } from '../helpers/docker.js'
import { makeTemplate } from '../helpers/template.js'
import { waitFor } from '../helpers/wait.js'

const skip = dockerSkipReason() ?? undefined
const log = pino({ level: 'silent' })
const op: OperationOptions = { log }
const demo = makeTemplate({ name: 'demo', provider: 'docker', minFree: 0, settings: testAppSettings() })

function spec(poolId: string, id = newInstanceId()): InstanceSpec {
  return {
    id,
    poolId,
    template: demo,
    basePath: `/s/${id}/`,
    labels: { [LABEL_POOL]: poolId, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: demo.name, 'studiopool:generation': '0' },
    progressUrl: `http://127.0.0.1:9/api/v1/instances/${id}/progress`,
    progressToken: 'progress-token',
    appToken: 'app-token',
    ownerId: null,
    sessionUrl: `http://gateway.test/s/${id}/`,
  }
}

const hostOf = (i: ProviderInstance): string => i.ref.split('/')[0]!

describe('docker provider on several hosts (two real daemons)', { skip, timeout: 300_000 }, () => {
  let a: TestDockerd
  let b: TestDockerd
  let proxy: DockerProxy | undefined
  const providers: DockerProvider[] = []

  function make(poolId: string, hosts: Record<string, unknown>[], extra: Record<string, unknown> = {}): DockerProvider {
    const p = new DockerProvider({ poolId, dataDir: '/nonexistent', settings: { hosts, ...extra }, log })
    providers.push(p)
    return p
  }

  before(async () => {
    a = await startDockerd()
    // Only one daemon may manage iptables on a machine (each flushes the other's chains at start).
    b = await startDockerd({ iptables: false })
  })

  after(async () => {
    for (const p of providers) await p.close()
    await proxy?.close()
    for (const d of [b, a]) {
      if (!d) continue
      try {
        process.kill(d.pid, 'SIGCONT')
      } catch {
        // gone
      }
      await d.stop()
    }
  })

  it('limits concurrent starts per host, and starts all at once without a limit', async () => {
    proxy = await startDockerProxy(a.socket, join(a.dir, 'proxy.sock'))
    const isCreate = (method: string, path: string): boolean =>
      method === 'POST' && path.startsWith('/containers/create')

    const limited = make('limit-pool', [{ name: 'p', url: proxy.url, maxConcurrentStarts: 2 }])
    await limited.init(op)
    proxy.holdWhere(isCreate)
    const creates = [0, 1, 2].map(() => limited.create(spec('limit-pool'), op))
    // Two creates reach the daemon; the third waits for a slot in the provider.
    await waitFor(
      'two creates held and one waiting',
      () => proxy!.held === 2 && limited.hostStatus()[0]!.waiting === 1,
      20_000,
    )
    assert.equal(proxy.held, 2)
    assert.equal(limited.hostStatus()[0]!.starting, 2)
    proxy.passAll()
    const made = await Promise.all(creates)
    assert.equal(new Set(made.map((i) => i.ref)).size, 3)
    for (const i of made) assert.equal(i.state, 'running')

    const unlimited = make('nolimit-pool', [{ name: 'p', url: proxy.url }])
    await unlimited.init(op)
    proxy.holdWhere(isCreate)
    const all = [0, 1, 2].map(() => unlimited.create(spec('nolimit-pool'), op))
    await waitFor('all three creates at the daemon at once', () => proxy!.held === 3, 20_000)
    proxy.passAll()
    const made2 = await Promise.all(all)
    for (const i of [...made, ...made2]) await (made.includes(i) ? limited : unlimited).destroy(i.ref, op)
  })

  it('spreads sessions over hosts, fills none beyond maxInstances, and says when all are full', async () => {
    const pool = 'spread-pool'
    const p = make(pool, [
      { name: 'a', url: a.url },
      { name: 'b', url: b.url },
    ])
    await p.init(op)
    const made: ProviderInstance[] = []
    for (let i = 0; i < 4; i++) made.push(await p.create(spec(pool), op))
    assert.deepEqual(made.map(hostOf).sort(), ['a', 'a', 'b', 'b'])

    const capped = make(pool, [
      { name: 'a', url: a.url, maxInstances: 2 },
      { name: 'b', url: b.url, maxInstances: 3 },
    ])
    await capped.init(op)
    const fifth = await capped.create(spec(pool), op)
    assert.equal(hostOf(fifth), 'b', 'host a is full')
    await assert.rejects(
      capped.create(spec(pool), op),
      (err: unknown) => err instanceof ProviderError && err.retryable && /all full/.test(err.message),
    )
    for (const i of [...made, fifth]) await p.destroy(i.ref, op)
  })

  it('places by the CPUs and memory templates ask for, against what each host offers', async () => {
    const pool = 'size-pool'
    const p = make(pool, [
      { name: 'a', url: a.url, cpus: 2, memory: '1g' },
      { name: 'b', url: b.url, cpus: 2, memory: '1g' },
    ])
    await p.init(op)
    const big = makeTemplate({
      name: 'big',
      provider: 'docker',
      minFree: 0,
      settings: testAppSettings({ cpus: 1.5, memory: '256m' }),
    })
    const wide = makeTemplate({
      name: 'wide',
      provider: 'docker',
      minFree: 0,
      settings: testAppSettings({ memory: '600m' }),
    })
    const made: ProviderInstance[] = []
    for (const t of [big, big]) made.push(await p.create({ ...spec(pool), template: t }, op))
    assert.deepEqual(made.map(hostOf).sort(), ['a', 'b'], 'one 1.5-CPU session per 2-CPU host')
    await assert.rejects(
      p.create({ ...spec(pool), template: big }, op),
      (err: unknown) => err instanceof ProviderError && /CPUs or memory/.test(err.message),
    )
    // 256 MiB used on each host: one 600 MiB session still fits on each, a second on neither.
    for (const t of [wide, wide]) made.push(await p.create({ ...spec(pool), template: t }, op))
    assert.deepEqual(made.slice(2).map(hostOf).sort(), ['a', 'b'])
    await assert.rejects(
      p.create({ ...spec(pool), template: wide }, op),
      (err: unknown) => err instanceof ProviderError && /all full/.test(err.message),
    )
    const labels = await a.api<{ Config: { Labels: Record<string, string> } }>(
      'GET',
      `/containers/${made.find((i) => hostOf(i) === 'a')!.ref.split('/')[1]}/json`,
    )
    assert.equal(labels.body.Config.Labels['studiopool.request.nanocpus'], '1500000000')
    for (const i of made)
      assert.equal(
        i.labels['studiopool:request.nanocpus'],
        undefined,
        'placement labels are not reported as studiopool labels',
      )
    for (const i of made) await p.destroy(i.ref, op)
  })

  it('a host that stops answering: its sessions are lost, new ones go elsewhere, and it is used again when back', async () => {
    const pool = 'down-pool'
    const p = make(
      pool,
      [
        { name: 'a', url: a.url },
        { name: 'b', url: b.url },
      ],
      { requestTimeout: '3s', downBackoff: '200ms' },
    )
    await p.init(op)
    const made: ProviderInstance[] = []
    for (let i = 0; i < 4; i++) made.push(await p.create(spec(pool), op))
    const onB = made.filter((i) => hostOf(i) === 'b')
    assert.equal(onB.length, 2)

    process.kill(b.pid, 'SIGSTOP') // dockerd hangs; its containers keep running, unreachable to us
    let resumed = false
    try {
      const listed = await waitFor(
        "b's sessions to be listed as lost",
        async () => {
          const l = await p.list(op)
          return onB.every((i) => l.find((x) => x.ref === i.ref)?.state === 'terminated') ? l : null
        },
        20_000,
      )
      for (const i of onB)
        assert.match(listed.find((x) => x.ref === i.ref)!.message ?? '', /Docker host b does not answer/)
      for (const i of made.filter((x) => hostOf(x) === 'a'))
        assert.equal(listed.find((x) => x.ref === i.ref)?.state, 'running')
      assert.equal(p.hostStatus().find((h) => h.name === 'b')!.up, false)
      const described = await p.describe(
        onB.map((i) => i.ref),
        op,
      )
      for (const i of onB) assert.equal(described.get(i.ref)?.state, 'terminated')
      // The pool replaces a lost session under the same instanceId, with the next generation.
      const lost = onB[0]!
      const base = spec(pool, lost.instanceId)
      const replacement = await p.create({ ...base, labels: { ...base.labels, 'studiopool:generation': '1' } }, op)
      assert.equal(hostOf(replacement), 'a', 'placed on the host that answers')
      made.push(replacement)
      const other = await p.create(spec(pool), op)
      assert.equal(hostOf(other), 'a')
      made.push(other)

      process.kill(b.pid, 'SIGCONT')
      resumed = true
      const back = await waitFor(
        "b's containers to be listed running again once it answers",
        async () => {
          const l = await p.list(op)
          return l.find((x) => x.ref === onB[1]!.ref)?.state === 'running' ? l : null
        },
        20_000,
      )
      // The replaced session's old container on b is superseded: removed, one live container per instance.
      assert.deepEqual(
        back.filter((x) => x.instanceId === lost.instanceId && x.state !== 'terminated').map((x) => x.ref),
        [replacement.ref],
      )
      assert.equal(
        (await b.api('GET', `/containers/${lost.ref.split('/')[1]}/json`)).status,
        404,
        'the superseded container is gone from b',
      )
      made.splice(made.indexOf(lost), 1)
      assert.equal(p.hostStatus().find((h) => h.name === 'b')!.up, true)
      const next = await p.create(spec(pool), op)
      assert.equal(hostOf(next), 'b', 'b is used again (the less loaded host: 1 container against 4)')
      made.push(next)
    } finally {
      if (!resumed) process.kill(b.pid, 'SIGCONT')
    }

    // Now b's daemon stops for good (a host lost): its sessions are lost.
    await b.kill()
    const listed = await waitFor(
      "b's sessions to be listed as lost after its daemon stopped",
      async () => {
        const l = await p.list(op)
        return made
          .filter((i) => hostOf(i) === 'b')
          .every((i) => l.find((x) => x.ref === i.ref)?.state === 'terminated')
          ? l
          : null
      },
      20_000,
    )
    for (const i of made.filter((x) => hostOf(x) === 'a'))
      assert.equal(listed.find((x) => x.ref === i.ref)?.state, 'running')
    const last = await p.create(spec(pool), op)
    assert.equal(hostOf(last), 'a')
    made.push(last)
    for (const i of made.filter((x) => hostOf(x) === 'a')) await p.destroy(i.ref, op)
    // Destroying on a lost host resolves (the container is reaped when the host is back).
    for (const i of made.filter((x) => hostOf(x) === 'b')) await p.destroy(i.ref, op)
  })
})
