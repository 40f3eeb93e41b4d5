/**
 * kill -9 of the server during a create (issue 11): a child process creates a session through the
 * docker provider and is killed while its container start is held at an Engine API proxy (so the
 * container exists and was never started). A new provider object finds exactly one container,
 * lists it, and its create adopts and starts it: no second container, no leak.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { newInstanceId } from '../../src/domain/ids.js'
import { DockerProvider } from '../../src/providers/docker/index.js'
import {
  LABEL_INSTANCE,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type OperationOptions,
} from '../../src/providers/provider.js'
import { startDockerProxy, type DockerProxy } from '../helpers/docker-proxy.js'
import { dockerSkipReason, startDockerd, testAppSettings, type TestDockerd } from '../helpers/docker.js'
import { makeTemplate } from '../helpers/template.js'
import { waitFor } from '../helpers/wait.js'
import { pidAlive } from './helpers.js'

const skip = dockerSkipReason() ?? undefined
const log = pino({ level: 'silent' })
const op: OperationOptions = { log }
const POOL = 'docker-crash-pool'
const CHILD = join(import.meta.dirname, '..', 'helpers', 'docker-create-child.ts')

describe('kill -9 of the server during a docker create', { skip, timeout: 300_000 }, () => {
  let docker: TestDockerd
  let proxy: DockerProxy
  let provider: DockerProvider | undefined
  let childPid: number | undefined

  before(async () => {
    docker = await startDockerd()
    proxy = await startDockerProxy(docker.socket, join(docker.dir, 'proxy.sock'))
  })

  after(async () => {
    if (childPid && pidAlive(childPid)) process.kill(childPid, 'SIGKILL')
    await provider?.close()
    await proxy?.close()
    await docker?.stop()
  })

  it('between container create and start: exactly one container, adopted and started', async () => {
    const template = makeTemplate({ name: 'demo', provider: 'docker', minFree: 0, settings: testAppSettings() })
    const id = newInstanceId()
    const spec: InstanceSpec = {
      id,
      poolId: POOL,
      template,
      basePath: `/s/${id}/`,
      labels: { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: 'demo', 'studiopool:generation': '0' },
      progressUrl: `http://127.0.0.1:9/api/v1/instances/${id}/progress`,
      progressToken: 'progress-token',
      appToken: 'app-token',
      ownerId: 'alice',
      sessionUrl: `http://gateway.test/s/${id}/`,
    }
    proxy.holdWhere((method, path) => method === 'POST' && /^\/containers\/[0-9a-f]{64}\/start/.test(path))
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', CHILD, JSON.stringify({ url: proxy.url, poolId: POOL, spec })],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    childPid = child.pid
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    const exited = new Promise<void>((r) => child.once('exit', () => r()))
    await waitFor('the child to reach the container start', () => proxy.held === 1, 60_000)
    child.kill('SIGKILL')
    await exited
    assert.doesNotMatch(out, /created/, 'killed before its create returned')
    proxy.dropAll() // the start never reaches the daemon

    const filter = encodeURIComponent(JSON.stringify({ label: [`studiopool.instance=${id}`] }))
    const before = (
      await docker.api<{ Id: string; State: string }[]>('GET', `/containers/json?all=true&filters=${filter}`)
    ).body
    assert.equal(before.length, 1, 'one container')
    assert.equal(before[0]!.State, 'created', 'made, never started')

    provider = new DockerProvider({
      poolId: POOL,
      dataDir: '/nonexistent',
      settings: { hosts: [{ name: 'h1', url: docker.url }] },
      log,
    })
    await provider.init(op)
    const listed = (await provider.list(op)).filter((i) => i.instanceId === id)
    assert.deepEqual(
      listed.map((i) => i.state),
      ['pending'],
      'listed once, as pending',
    )
    const adopted = await provider.create(spec, op)
    assert.equal(adopted.ref, `h1/${before[0]!.Id}`, 'the same container')
    assert.equal(adopted.state, 'running')
    const res = await waitFor(
      'the adopted session to answer',
      async () => {
        const r = await fetch(new URL('/', adopted.address!), { signal: AbortSignal.timeout(5000) })
        return r.ok ? ((await r.json()) as { instanceId: string }) : undefined
      },
      20_000,
    )
    assert.equal(res.instanceId, id)
    const afterCreate = (await docker.api<unknown[]>('GET', `/containers/json?all=true&filters=${filter}`)).body
    assert.equal(afterCreate.length, 1, 'still one container')
    await provider.destroy(adopted.ref, op)
  })
})
