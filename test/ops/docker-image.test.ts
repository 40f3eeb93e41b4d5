/**
 * The Dockerfile of studiopool itself (issue 17 "Deploy"), built and run against a private dockerd
 * (test/helpers/docker.ts). No registry is reachable, so the base image (`BASE_IMAGE`, by default
 * the official node:24 slim image) is a local one imported from a small root filesystem: this
 * machine's Node 24 (/tmp/studiopool-ci-node24), npm, a shell and the few tools the build runs.
 * The build context brings node_modules (the Dockerfile skips `npm ci` then). Shows: the image
 * runs as uid 1000 from dist/, `/healthz` answers 200, the HEALTHCHECK turns healthy, a warm
 * session opens through its gateway, and SIGTERM (`docker stop`) ends it gracefully with exit 0.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import {
  chmodSync,
  copyFileSync,
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, describe, test } from 'node:test'
import { Agent, request } from 'undici'
import { dockerSkipReason, startDockerd, type TestDockerd } from '../helpers/docker.js'
import { REPO } from '../helpers/server-process.js'
import { waitFor } from '../helpers/wait.js'

const NODE24 = '/tmp/studiopool-ci-node24/node_modules/node/bin/node'
const NPM = ['/usr/lib/node_modules/npm', '/usr/local/lib/node_modules/npm'].find((p) => existsSync(p))
const skip =
  dockerSkipReason() ?? (existsSync(NODE24) ? null : `${NODE24} is missing`) ?? (NPM ? null : 'npm is missing')
const BASE = 'studiopool-node24-base:test'
const IMAGE = 'studiopool:test'
const ADMIN_KEY = 'image-test-admin-key-0123456789'
/** What the Dockerfile's RUN lines and the local provider's session wrapper use. */
const TOOLS = ['sh', 'rm', 'cp', 'mkdir', 'chown', 'chmod', 'ls', 'cat', 'env']

const work = mkdtempSync(join(tmpdir(), 'sp-img-'))
let docker: TestDockerd | undefined
after(async () => {
  await docker?.stop()
  rmSync(work, { recursive: true, force: true })
})

/** Copies a file to the same path under `root` (following links), creating directories. */
function place(root: string, file: string, at = file): void {
  const to = join(root, at.replace(/^\/lib(64)?\//, '/usr/lib$1/'))
  mkdirSync(dirname(to), { recursive: true })
  if (!existsSync(to)) copyFileSync(file, to)
  chmodSync(to, 0o755)
}

/** The base image's root filesystem: /usr-merged layout, Node 24 and npm under /usr/local, the tools and their libraries. */
function baseRootfs(): string {
  const root = join(work, 'rootfs')
  for (const d of ['etc', 'tmp', 'usr/bin', 'usr/lib', 'usr/lib64', 'usr/local/bin', 'proc', 'sys', 'dev', 'run'])
    mkdirSync(join(root, d), { recursive: true })
  for (const [link, target] of [
    ['bin', 'usr/bin'],
    ['sbin', 'usr/bin'],
    ['lib', 'usr/lib'],
    ['lib64', 'usr/lib64'],
  ])
    spawnSync('ln', ['-s', target!, join(root, link!)])
  chmodSync(join(root, 'tmp'), 0o1777)
  const binaries = TOOLS.map((t) => spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim())
  for (const [i, b] of binaries.entries()) place(root, b, `/usr/bin/${TOOLS[i]}`)
  place(root, NODE24, '/usr/local/bin/node')
  for (const b of [...binaries, NODE24]) {
    const ldd = spawnSync('ldd', [b], { encoding: 'utf8' }).stdout
    for (const m of ldd.matchAll(/(\/\S+\.so[^\s]*)/g)) place(root, m[1]!)
  }
  mkdirSync(join(root, 'usr/local/lib/node_modules'), { recursive: true })
  const npm = spawnSync('cp', ['-a', NPM!, join(root, 'usr/local/lib/node_modules/npm')])
  assert.equal(npm.status, 0, npm.stderr?.toString())
  writeFileSync(
    join(root, 'usr/local/bin/npm'),
    '#!/bin/sh\nexec /usr/local/bin/node /usr/local/lib/node_modules/npm/bin/npm-cli.js "$@"\n',
    { mode: 0o755 },
  )
  writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n')
  writeFileSync(join(root, 'etc/group'), 'root:x:0:\nnode:x:1000:\n')
  return root
}

/** The build context: what `docker build .` in a checkout sends, plus node_modules (no registry here). */
function buildContext(): string {
  const ctx = join(work, 'ctx')
  mkdirSync(ctx)
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'Dockerfile'])
    copyFileSync(join(REPO, f), join(ctx, f))
  for (const d of ['bin', 'src', 'examples', 'deploy']) spawnSync('cp', ['-a', join(REPO, d), join(ctx, d)])
  // The worktree's node_modules may be a symlink: copy what it points to, keeping the links inside.
  const r = spawnSync('cp', ['-a', `${join(REPO, 'node_modules')}/.`, join(ctx, 'node_modules')])
  assert.equal(r.status, 0, r.stderr?.toString())
  return ctx
}

function tarOf(dir: string, name: string): string {
  const tar = join(work, name)
  const r = spawnSync('tar', ['-C', dir, '-cf', tar, '.'])
  assert.equal(r.status, 0, r.stderr.toString())
  return tar
}

/** A streaming Engine API call with a tar body; fails on an error in the JSON message stream. */
async function postTar(d: TestDockerd, path: string, tar: string, timeoutMs: number): Promise<string> {
  const agent = new Agent({ connect: { socketPath: d.socket } })
  try {
    const res = await request(`http://docker/v1.41${path}`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/x-tar' },
      body: createReadStream(tar),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    })
    const text = await res.body.text()
    assert.equal(res.statusCode, 200, text.slice(-2000))
    assert.doesNotMatch(text, /"error(Detail)?"/, text.slice(-3000))
    return text
  } finally {
    await agent.close()
  }
}

describe('the studiopool image', { skip: skip ?? false }, () => {
  let ip = ''
  let id = ''

  test('builds from the Dockerfile on a local base image', { timeout: 900_000 }, async () => {
    docker = await startDockerd({ image: false, iptables: false })
    await postTar(
      docker,
      `/images/create?fromSrc=-&repo=${BASE.split(':')[0]}&tag=test`,
      tarOf(baseRootfs(), 'base.tar'),
      300_000,
    )
    const args = encodeURIComponent(JSON.stringify({ BASE_IMAGE: BASE }))
    const out = await postTar(
      docker,
      `/build?t=${IMAGE}&buildargs=${args}&networkmode=none&rm=1&forcerm=1`,
      tarOf(buildContext(), 'ctx.tar'),
      900_000,
    )
    assert.match(out, /Successfully tagged studiopool:test/)
    const img = await docker.api<{ Config: { User: string; Healthcheck?: { Test: string[] }; Entrypoint: string[] } }>(
      'GET',
      `/images/${IMAGE}/json`,
    )
    assert.equal(img.status, 200)
    assert.equal(img.body.Config.User, '1000:1000', 'not root')
    assert.match(img.body.Config.Healthcheck!.Test.join(' '), /\/healthz/)
    assert.deepEqual(img.body.Config.Entrypoint, ['node', '/app/bin/studiopool.js'])
    const ls = await run(docker, ['ls', '/app'])
    assert.deepEqual(ls.split('\n').filter(Boolean).sort(), ['bin', 'dist', 'examples', 'node_modules', 'package.json'])
  })

  test(
    'docker run: /healthz 200, the HEALTHCHECK turns healthy, a warm session through its gateway',
    { timeout: 300_000 },
    async () => {
      const d = docker!
      const net = await d.api<{ Id: string }>('POST', '/networks/create', { Name: 'sp-image-test', Driver: 'bridge' })
      assert.equal(net.status, 201, JSON.stringify(net.body))
      const created = await d.api<{ Id: string }>('POST', '/containers/create?name=studiopool-image-test', {
        Image: IMAGE,
        Env: [`STUDIOPOOL_ADMIN_KEY=${ADMIN_KEY}`, 'STUDIOPOOL_LOG_LEVEL=info'],
        HostConfig: { NetworkMode: 'sp-image-test', Init: false },
      })
      assert.equal(created.status, 201, JSON.stringify(created.body))
      id = created.body.Id
      assert.equal((await d.api('POST', `/containers/${id}/start`)).status, 204)
      const info = await d.api<{ NetworkSettings: { Networks: Record<string, { IPAddress: string }> } }>(
        'GET',
        `/containers/${id}/json`,
      )
      ip = info.body.NetworkSettings.Networks['sp-image-test']!.IPAddress
      const base = `http://${ip}:8080`
      await waitFor(
        '/healthz 200 from the container',
        async () => (await request(`${base}/healthz`)).statusCode === 200,
        60_000,
      )

      const auth = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }
      // The default template (the demo app) keeps one warm instance: wait until it is ready, then claim it.
      try {
        await waitFor(
          'a ready warm instance of the default template',
          async () => {
            const r = await request(`${base}/api/v1/templates`, { headers: auth })
            const body = (await r.body.json()) as { templates: { instances: Record<string, number> }[] }
            return (body.templates[0]?.instances.ready ?? 0) >= 1
          },
          120_000,
          500,
        )
      } catch (err) {
        assert.fail(`${(err as Error).message}\ncontainer log:\n${(await logsOf(d, id)).slice(-4000)}`)
      }
      const r = await request(`${base}/api/v1/sessions`, {
        method: 'POST',
        headers: auth,
        body: JSON.stringify({ userId: 'alice' }),
      })
      const grant = (await r.body.json()) as { url: string; outcome: string; state: string; instanceId: string }
      assert.equal(grant.outcome, 'warm', JSON.stringify(grant))
      assert.equal(grant.state, 'ready')
      const launch = new URL(grant.url)
      const res = await request(`${base}${launch.pathname}${launch.search}`)
      await res.body.dump()
      assert.equal(res.statusCode, 302)
      const cookie = String(([] as string[]).concat(res.headers['set-cookie'] ?? [])[0]).split(';')[0]!
      const page = await request(`${base}/s/${grant.instanceId}/`, { headers: { cookie, accept: 'text/html' } })
      const html = await page.body.text()
      assert.equal(page.statusCode, 200, html.slice(0, 500))
      assert.match(html, /demo/i)

      const health = await waitFor(
        'the HEALTHCHECK to report healthy',
        async () => {
          const r = await d.api<{ State: { Health?: { Status: string } } }>('GET', `/containers/${id}/json`)
          return r.body.State.Health?.Status === 'healthy' ? r.body.State.Health : undefined
        },
        90_000,
        1000,
      )
      assert.equal(health.Status, 'healthy')
      // The container's main process (the server, PID 1 inside) as the host sees it: uid 1000.
      const inspect = await d.api<{ State: { Pid: number } }>('GET', `/containers/${id}/json`)
      const status = readFileSync(`/proc/${inspect.body.State.Pid}/status`, 'utf8')
      assert.match(status, /^Uid:\s+1000\s+1000\s+1000\s+1000$/m, 'the server runs as uid 1000')
      assert.match(readFileSync(`/proc/${inspect.body.State.Pid}/cmdline`, 'utf8'), /\/app\/bin\/studiopool\.js/)
    },
  )

  test('docker stop: SIGTERM ends it gracefully (exit 0), its log is JSON lines', { timeout: 120_000 }, async () => {
    const d = docker!
    assert.equal((await d.api('POST', `/containers/${id}/stop?t=30`)).status, 204)
    const state = await d.api<{ State: { ExitCode: number; Running: boolean } }>('GET', `/containers/${id}/json`)
    assert.equal(state.body.State.Running, false)
    assert.equal(state.body.State.ExitCode, 0)
    const text = await logsOf(d, id)
    const lines = text.split('\n').filter((l) => l.trim())
    assert.ok(
      lines.some((l) => /SIGTERM, shutting down/.test(l)),
      text.slice(-2000),
    )
    for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), l)
  })
})

/** A one-off container of the image running argv; its output. */
async function run(d: TestDockerd, argv: string[]): Promise<string> {
  const c = await d.api<{ Id: string }>('POST', '/containers/create', {
    Image: IMAGE,
    Entrypoint: argv,
    Cmd: [],
    HostConfig: { NetworkMode: 'none' },
  })
  assert.equal(c.status, 201, JSON.stringify(c.body))
  await d.api('POST', `/containers/${c.body.Id}/start`)
  await waitFor(
    'the one-off container to exit',
    async () => {
      const r = await d.api<{ State: { Running: boolean } }>('GET', `/containers/${c.body.Id}/json`)
      return !r.body.State.Running
    },
    30_000,
  )
  const out = await logsOf(d, c.body.Id)
  await d.api('DELETE', `/containers/${c.body.Id}?force=true`)
  return out
}

/** A container's stdout and stderr, demultiplexed (8-byte frame headers: stream, 0, 0, 0, size). */
async function logsOf(d: TestDockerd, id: string): Promise<string> {
  const agent = new Agent({ connect: { socketPath: d.socket } })
  try {
    const res = await request(`http://docker/v1.41/containers/${id}/logs?stdout=1&stderr=1`, { dispatcher: agent })
    const buf = Buffer.from(await res.body.arrayBuffer())
    let out = ''
    for (let i = 0; i + 8 <= buf.length;) {
      const size = buf.readUInt32BE(i + 4)
      out += buf.subarray(i + 8, i + 8 + size).toString()
      i += 8 + size
    }
    return out
  } finally {
    await agent.close()
  }
}
