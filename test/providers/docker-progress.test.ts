/**
 * What a user sees while a Docker session starts, and the settings that only show at create: an
 * image pull reported as launch progress (layers done / total, posted to the instance's progress
 * URL with its token; the pull is scripted at an Engine API proxy, as no registry can be reached
 * here), a wait for a start slot on a busy host, a pull that fails and an image that may not be
 * pulled (named in the error), GPUs asked of a host without them (a clear error, no container
 * left). Then the TLS and GPU settings' checks (no Docker needed).
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { ProviderError } from '../../src/domain/errors.js'
import { newInstanceId } from '../../src/domain/ids.js'
import {
  DockerProvider,
  parseDockerProviderSettings,
  parseDockerTemplateSettings,
} from '../../src/providers/docker/index.js'
import { containerBody } from '../../src/providers/docker/docker-container-body.js'
import {
  LABEL_INSTANCE,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type OperationOptions,
} from '../../src/providers/provider.js'
import { startDockerProxy, type DockerProxy } from '../helpers/docker-proxy.js'
import { dockerSkipReason, startDockerd, testAppSettings, TEST_IMAGE, type TestDockerd } from '../helpers/docker.js'
import { makeTemplate } from '../helpers/template.js'
import { waitFor } from '../helpers/wait.js'

const skip = dockerSkipReason() ?? undefined
const log = pino({ level: 'silent' })
const op: OperationOptions = { log }
const POOL = 'docker-progress-pool'

interface Report {
  auth: string
  progress: number
  message: string
}

describe('docker launch progress and create-time errors (real Docker Engine)', { skip, timeout: 300_000 }, () => {
  let docker: TestDockerd
  let proxy: DockerProxy
  let progressServer: Server
  let progressBase: string
  const reports = new Map<string, Report[]>()
  const providers: DockerProvider[] = []

  function make(extra: Record<string, unknown> = {}): DockerProvider {
    const p = new DockerProvider({
      poolId: POOL,
      dataDir: '/nonexistent',
      settings: { hosts: [{ name: 'h1', url: proxy.url, ...extra }], requestTimeout: '20s' },
      log,
    })
    providers.push(p)
    return p
  }

  function spec(settings: Record<string, unknown>): InstanceSpec {
    const id = newInstanceId()
    const template = makeTemplate({ name: 'demo', provider: 'docker', minFree: 0, settings: testAppSettings(settings) })
    return {
      id,
      poolId: POOL,
      template,
      basePath: `/s/${id}/`,
      labels: { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: 'demo', 'studiopool:generation': '0' },
      progressUrl: `${progressBase}/api/v1/instances/${id}/progress`,
      progressToken: `token-of-${id}`,
      appToken: 'app-token',
      ownerId: null,
      sessionUrl: `http://gateway.test/s/${id}/`,
    }
  }

  before(async () => {
    docker = await startDockerd()
    proxy = await startDockerProxy(docker.socket, join(docker.dir, 'proxy.sock'))
    progressServer = createServer((req, res) => {
      let body = ''
      req.on('data', (d: Buffer) => (body += d.toString()))
      req.on('end', () => {
        const id = /instances\/([^/]+)\/progress/.exec(req.url ?? '')?.[1] ?? '?'
        const parsed = JSON.parse(body) as { progress: number; message: string }
        reports.set(id, [...(reports.get(id) ?? []), { auth: req.headers.authorization ?? '', ...parsed }])
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{}')
      })
    })
    await new Promise<void>((r) => progressServer.listen(0, '127.0.0.1', r))
    const addr = progressServer.address() as { port: number }
    progressBase = `http://127.0.0.1:${addr.port}`
  })

  after(async () => {
    for (const p of providers) await p.close()
    await new Promise<void>((r) => progressServer?.close(() => r()))
    await proxy?.close()
    await docker?.stop()
  })

  it('an image pull is reported as launch progress: layers done / total, with the instance token', async () => {
    const p = make()
    await p.init(op)
    // A pull of three layers, one already present, as the daemon streams it.
    proxy.respondWhere(
      (method, path) => method === 'POST' && path.startsWith('/images/create'),
      (res) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        const lines = [
          { status: 'Pulling from library/studiopool-test', id: '1' },
          { status: 'Pulling fs layer', id: 'aaa' },
          { status: 'Already exists', id: 'bbb' },
          { status: 'Pulling fs layer', id: 'ccc' },
          { status: 'Downloading', id: 'aaa', progressDetail: { current: 10, total: 100 } },
          { status: 'Pull complete', id: 'aaa' },
          { status: 'Downloading', id: 'ccc', progressDetail: { current: 50, total: 100 } },
          { status: 'Pull complete', id: 'ccc' },
          { status: 'Digest: sha256:0123' },
          { status: `Status: Downloaded newer image for ${TEST_IMAGE}` },
        ]
        for (const l of lines) res.write(JSON.stringify(l) + '\r\n')
        res.end()
      },
    )
    try {
      const s = spec({ pullPolicy: 'always' })
      const inst = await p.create(s, op)
      assert.equal(inst.state, 'running')
      const seen = reports.get(s.id) ?? []
      assert.ok(
        seen.every((r) => r.auth === `Bearer ${s.progressToken}`),
        'every report carries the instance token',
      )
      const messages = seen.map((r) => r.message)
      assert.equal(messages[0], `pulling image ${TEST_IMAGE} on h1`)
      assert.equal(messages.at(-1), `pulling image ${TEST_IMAGE} on h1: 3/3 layers`, messages.join(' | '))
      const numbers = seen.map((r) => r.progress)
      assert.deepEqual(
        numbers,
        [...numbers].sort((a, b) => a - b),
        'progress never goes back',
      )
      assert.ok(numbers.at(-1)! <= 15, 'the pull stays below what the pool sets once the container is made')
      await p.destroy(inst.ref, op)
    } finally {
      proxy.respondWhere(null)
    }
  })

  it('a pull that fails, and an image that may not be pulled, are errors naming the image', async () => {
    const p = make()
    await assert.rejects(
      p.create(spec({ image: '127.0.0.1:9/nothing:1', pullPolicy: 'ifNotPresent' }), op),
      (err: unknown) =>
        err instanceof ProviderError && /cannot pull image "127\.0\.0\.1:9\/nothing:1" on h1/.test(err.message),
    )
    await assert.rejects(
      p.create(spec({ image: 'studiopool-absent:1', pullPolicy: 'never' }), op),
      (err: unknown) =>
        err instanceof ProviderError &&
        err.kind === 'missing' &&
        /image "studiopool-absent:1" is not on Docker host h1, and its pullPolicy is never/.test(err.message),
    )
  })

  it('at start, a pullPolicy: never template whose image no host has is unavailable, naming the image', async () => {
    const p = make()
    await p.init(op)
    const template = (settings: Record<string, unknown>) =>
      makeTemplate({ name: 'demo', provider: 'docker', minFree: 0, settings: testAppSettings(settings) })
    const problems = await p.checkTemplate(template({ image: 'studiopool-absent:1', pullPolicy: 'never' }), op)
    assert.deepEqual(problems, [
      'image "studiopool-absent:1" is not on any Docker host (h1), and its pullPolicy is never',
    ])
    // The test image is there; other pull policies are judged at create (a pull may bring it).
    assert.deepEqual(await p.checkTemplate(template({ pullPolicy: 'never' }), op), [])
    assert.deepEqual(
      await p.checkTemplate(template({ image: 'studiopool-absent:1', pullPolicy: 'ifNotPresent' }), op),
      [],
    )
  })

  it('a create waiting for a start slot tells the user how many are in line', async () => {
    const p = make({ maxConcurrentStarts: 1 })
    proxy.holdWhere((method, path) => method === 'POST' && path.startsWith('/containers/create'))
    try {
      const first = spec({})
      const second = spec({})
      const a = p.create(first, op)
      await waitFor('the first create to reach the daemon', () => proxy.held === 1, 30_000)
      const b = p.create(second, op)
      await waitFor(
        'the second create to report its wait',
        () =>
          (reports.get(second.id) ?? []).some(
            (r) => r.message === 'waiting for a start slot on Docker host h1 (1 in line)',
          ),
        30_000,
      )
      assert.equal(reports.get(first.id), undefined, 'the first had a slot and nothing to report')
      proxy.passAll()
      const [ia, ib] = await Promise.all([a, b])
      await p.destroy(ia.ref, op)
      await p.destroy(ib.ref, op)
    } finally {
      proxy.passAll()
    }
  })

  it('GPUs asked of a host without them: a clear error, and no container left', async () => {
    const p = make()
    await assert.rejects(p.create(spec({ gpus: 'all' }), op), (err: unknown) => {
      assert.ok(err instanceof ProviderError, String(err))
      assert.match(err.message, /cannot start the container .* on h1: .*(device driver|gpu)/i)
      assert.equal(err.retryable, false, 'the session fails with the reason instead of retrying for ever')
      return true
    })
    const filters = encodeURIComponent(JSON.stringify({ label: [`studiopool.pool=${POOL}`] }))
    const left = await docker.api<unknown[]>('GET', `/containers/json?all=true&filters=${filters}`)
    assert.deepEqual(left.body, [], 'the container that could not start is removed')
  })
})

describe('docker TLS and GPU settings', () => {
  const dir = mkdtempSync(join(tmpdir(), 'spdk-tls-'))
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('reads the CA, client certificate and key of a tcp:// host, and says what is wrong otherwise', () => {
    for (const f of ['ca.pem', 'cert.pem', 'key.pem']) writeFileSync(join(dir, f), `-----BEGIN ${f}-----\n`)
    const ok = parseDockerProviderSettings({
      hosts: [
        {
          name: 'remote',
          url: 'tcp://10.0.0.12:2376',
          tls: { ca: join(dir, 'ca.pem'), cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') },
        },
      ],
    })
    assert.equal(ok.hosts[0]!.tls!.ca, '-----BEGIN ca.pem-----\n')
    assert.equal(ok.hosts[0]!.tls!.verify, true, 'the daemon certificate is checked by default')
    const bad = (tls: Record<string, unknown>, url = 'tcp://10.0.0.12:2376') => {
      try {
        parseDockerProviderSettings({ hosts: [{ name: 'remote', url, tls }] })
      } catch (err) {
        return (err as Error).message
      }
      return ''
    }
    assert.match(bad({ ca: join(dir, 'absent.pem') }), /hosts\.0\.tls\.ca: cannot read ".*absent\.pem" \(ENOENT\)/)
    assert.match(bad({ cert: join(dir, 'cert.pem') }), /cert and key go together/)
    assert.match(bad({ ca: join(dir, 'ca.pem') }, 'unix:///run/docker.sock'), /tls: only for a tcp:\/\/ url/)
  })

  it('gpus become Docker device requests (all, a count, or device ids)', () => {
    const body = (gpus: unknown) => {
      const r = parseDockerTemplateSettings({ image: 'x', port: 80, gpus }, null)
      assert.ok(r.settings, r.problems.join('; '))
      const id = newInstanceId()
      const host = parseDockerProviderSettings({}).hosts[0]!
      const b = containerBody(
        {
          id,
          poolId: 'p',
          template: makeTemplate({ name: 't', provider: 'docker' }),
          basePath: `/s/${id}/`,
          labels: {},
          progressUrl: 'http://x/',
          progressToken: 't',
          appToken: 'a',
          ownerId: null,
          sessionUrl: 'http://x/',
        },
        r.settings,
        host,
        'net',
        null,
      )
      return (b.HostConfig as { DeviceRequests?: unknown[] }).DeviceRequests
    }
    assert.deepEqual(body('all'), [
      { Driver: 'nvidia', Count: -1, DeviceIDs: null, Capabilities: [['gpu']], Options: {} },
    ])
    assert.deepEqual(body(2), [{ Driver: 'nvidia', Count: 2, DeviceIDs: null, Capabilities: [['gpu']], Options: {} }])
    assert.deepEqual(body({ deviceIds: ['GPU-1'], capabilities: ['gpu', 'compute'] }), [
      { Driver: 'nvidia', Count: 0, DeviceIDs: ['GPU-1'], Capabilities: [['gpu', 'compute']], Options: {} },
    ])
    assert.equal(body(undefined), undefined, 'no device requests without gpus')
    assert.match(parseDockerTemplateSettings({ image: 'x', port: 80, gpus: 0 }, null).problems.join(), /docker\.gpus/)
  })
})
