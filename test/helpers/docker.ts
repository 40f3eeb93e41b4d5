/**
 * A private Docker Engine for one test file: its own socket, data root, exec root and pid file
 * in a temporary directory, started as root and stopped by pid (never by name). No image
 * registry can be reached from CI, so the test image is imported from a tiny root filesystem
 * (symlinks, /etc/passwd, an empty /usr) and sessions bind-mount the host's /usr read-only to
 * run the host's node.
 *
 * ```ts
 * const docker = await startDockerd()          // skip the file when docker.skip is a string
 * after(() => docker.stop())
 * ```
 */
import { spawn, spawnSync } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  closeSync,
  rmSync,
  writeFileSync,
  chownSync,
  chmodSync,
  symlinkSync,
  createReadStream,
  readFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { pidAlive } from '../providers/helpers.js'
import { waitFor } from './wait.js'

export const TEST_IMAGE = 'studiopool-test:1'
/** The uid:gid sessions run as in the test image (its /etc/passwd names it `session`). */
export const TEST_USER = '1000:1000'
export const DOCKERD = ['/usr/sbin/dockerd', '/usr/bin/dockerd'].find((p) => existsSync(p)) ?? null

/** Why Docker tests cannot run here, or null when they can. */
export function dockerSkipReason(): string | null {
  if (process.platform !== 'linux') return 'Docker tests need Linux'
  if (process.getuid?.() !== 0) return 'Docker tests start their own dockerd, which needs root'
  if (!DOCKERD) return 'dockerd is not installed (Debian package docker.io; .ci/run installs it)'
  return null
}

export interface TestDockerd {
  /** `unix:///…/docker.sock` */
  readonly url: string
  readonly socket: string
  readonly pid: number
  readonly dir: string
  /** One Engine API call (JSON in and out); for test set-up and checks, not the provider under test. */
  api<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>
  /** SIGTERM by pid, waits until it is gone (SIGKILL after 20 s). Idempotent. */
  kill(): Promise<void>
  /** Removes every container, network and volume (whatever the pool), stops the daemon, removes its directory. */
  stop(): Promise<void>
}

export interface StartDockerdOptions {
  /**
   * Let the daemon manage iptables (default true): needed for `enable_icc=false` to mean anything.
   * Two daemons on one machine must not both do so (each flushes the other's chains at start).
   */
  iptables?: boolean
  /** Import the test image (default true). */
  image?: boolean
  /** More dockerd arguments (a `--host tcp://…` with `--tlsverify`, for the TLS test). */
  extraArgs?: readonly string[]
}

let poolCounter = 0

export async function startDockerd(opts: StartDockerdOptions = {}): Promise<TestDockerd> {
  const reason = dockerSkipReason()
  if (reason) throw new Error(reason)
  // Short paths: containerd's sockets live under the exec root and a unix socket path has ≤ 107 bytes.
  const dir = mkdtempSync(join(tmpdir(), 'spdk-'))
  const socket = join(dir, 'docker.sock')
  const pidFile = join(dir, 'docker.pid')
  const logFile = join(dir, 'dockerd.log')
  // Each daemon draws container subnets from its own range, so two daemons never route the same subnet.
  const second = (100 + ((process.pid + poolCounter++ * 7) % 100)).toString()
  const args = [
    '--host',
    `unix://${socket}`,
    '--data-root',
    join(dir, 'data'),
    '--exec-root',
    join(dir, 'x'),
    '--pidfile',
    pidFile,
    '--bridge=none', // no docker0: the provider makes its own network
    '--ip-forward=false', // leave the machine's forwarding setting alone (other tests share it)
    `--iptables=${opts.iptables ?? true}`,
    '--default-address-pool',
    `base=10.${second}.0.0/16,size=24`,
    '--log-level=warn',
    ...(opts.extraArgs ?? []),
  ]
  const out = openSync(logFile, 'a')
  const child = spawn(DOCKERD!, args, { stdio: ['ignore', out, out], detached: true })
  closeSync(out)
  const pid = child.pid!
  child.unref()
  const agent = new Agent({ connect: { socketPath: socket } })

  async function api<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const res = await request(`http://docker/v1.41${path}`, {
      method: method as 'GET',
      dispatcher: agent,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    })
    const text = await res.body.text()
    let parsed: unknown = text
    try {
      parsed = text ? JSON.parse(text) : null
    } catch {
      // not JSON (ping, logs)
    }
    return { status: res.statusCode, body: parsed as T }
  }

  let killed = false
  /** Bridges of the daemon's networks, remembered so that a daemon killed with networks left leaves no interface behind. */
  const bridges = new Set<string>()
  async function kill(): Promise<void> {
    if (killed) return
    killed = true
    try {
      const networks = await api<{ Id: string; Driver: string; Options: Record<string, string> | null }[]>(
        'GET',
        '/networks',
      )
      for (const n of networks.body ?? [])
        if (n.Driver === 'bridge')
          bridges.add(n.Options?.['com.docker.network.bridge.name'] ?? `br-${n.Id.slice(0, 12)}`)
    } catch {
      // not answering (stopped): the bridges seen before are all we know
    }
    if (pidAlive(pid)) {
      try {
        process.kill(pid, 'SIGTERM')
      } catch {
        // gone
      }
      try {
        await waitFor(`dockerd ${pid} to exit`, () => !pidAlive(pid), 20_000)
      } catch {
        process.kill(pid, 'SIGKILL')
        await waitFor(`dockerd ${pid} to exit after SIGKILL`, () => !pidAlive(pid), 5_000)
      }
    }
  }

  async function stop(): Promise<void> {
    if (!killed) {
      try {
        const containers = await api<{ Id: string }[]>('GET', '/containers/json?all=true')
        for (const c of containers.body ?? []) await api('DELETE', `/containers/${c.Id}?force=true&v=true`)
        const volumes = await api<{ Volumes: { Name: string }[] | null }>('GET', '/volumes')
        for (const v of volumes.body?.Volumes ?? []) await api('DELETE', `/volumes/${v.Name}`)
        // Removing networks also removes their bridges and the daemon's per-bridge iptables rules.
        const networks = await api<{ Name: string; Id: string }[]>('GET', '/networks')
        for (const n of networks.body ?? [])
          if (!['none', 'host', 'bridge'].includes(n.Name)) await api('DELETE', `/networks/${n.Id}`)
      } catch {
        // the daemon is gone already: its data directory goes below anyway
      }
    }
    await agent.close().catch(() => {})
    await kill()
    for (const b of bridges) if (existsSync(`/sys/class/net/${b}`)) spawnSync('ip', ['link', 'del', b])
    // A daemon stopped with containers running may leave overlay mounts behind.
    const mounts = readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1] ?? '')
      .filter((m) => m.startsWith(dir + '/'))
    for (const m of mounts.reverse()) spawnSync('umount', ['-l', m])
    rmSync(dir, { recursive: true, force: true })
  }

  try {
    await waitFor(
      `dockerd to answer on ${socket} (log: ${logFile})`,
      async () => (await api('GET', '/_ping')).status === 200,
      30_000,
    )
    if (opts.image !== false) await importTestImage(api, dir)
  } catch (err) {
    await stop()
    throw err
  }
  return { url: `unix://${socket}`, socket, pid, dir, api, kill, stop }
}

/** `docker import` of a root filesystem with nothing in it but mount points, passwd and group. */
async function importTestImage(api: TestDockerd['api'], dir: string): Promise<void> {
  const root = join(dir, 'rootfs')
  for (const d of ['etc', 'tmp', 'usr', 'home/session', 'proc', 'sys', 'dev', 'run'])
    mkdirSync(join(root, d), { recursive: true })
  for (const [link, target] of [
    ['bin', 'usr/bin'],
    ['sbin', 'usr/sbin'],
    ['lib', 'usr/lib'],
    ['lib64', 'usr/lib64'],
  ])
    symlinkSync(target!, join(root, link!))
  chmodSync(join(root, 'tmp'), 0o1777)
  // The home volume is seeded from this directory, so a fresh volume belongs to the session's user.
  chownSync(join(root, 'home/session'), 1000, 1000)
  writeFileSync(
    join(root, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nsession:x:1000:1000:session:/home/session:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n',
  )
  writeFileSync(join(root, 'etc/group'), 'root:x:0:\nsession:x:1000:\nnogroup:x:65534:\n')
  const tar = join(dir, 'rootfs.tar')
  const r = spawnSync('tar', ['-C', root, '-cf', tar, '.'])
  if (r.status !== 0) throw new Error(`tar failed: ${r.stderr.toString()}`)
  const [repo, tag] = TEST_IMAGE.split(':')
  const agent = new Agent({ connect: { socketPath: join(dir, 'docker.sock') } })
  try {
    const res = await request(`http://docker/v1.41/images/create?fromSrc=-&repo=${repo}&tag=${tag}`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/x-tar' },
      body: createReadStream(tar),
    })
    const text = await res.body.text()
    if (res.statusCode !== 200 || text.includes('"error"'))
      throw new Error(`docker import failed: ${res.statusCode} ${text}`)
  } finally {
    await agent.close()
  }
  rmSync(root, { recursive: true, force: true })
  rmSync(tar, { force: true })
  const check = await api('GET', `/images/${TEST_IMAGE}/json`)
  if (check.status !== 200) throw new Error(`the test image ${TEST_IMAGE} is missing after import`)
}

/**
 * A small session app for containers, run by the host's node (bind-mounted /usr):
 * `GET /` → `{uid, gid, instanceId, user, home}`; `GET /write?name=&text=` and `GET /read?name=`
 * work in $HOME; `GET /probe?host=&port=` says whether a TCP connection opens
 * (`connected`, `refused`, `timeout` or an error code); `GET /exists?path=` whether a path exists;
 * `GET /alloc` starts eating memory until the kernel kills the process.
 */
export const TEST_APP = `
const http = require('http'), fs = require('fs'), net = require('net'), path = require('path')
const home = process.env.HOME || '/home/session'
process.on('SIGTERM', () => process.exit(0))
http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x')
  const q = (k) => u.searchParams.get(k) || ''
  const send = (code, v) => { res.writeHead(code, { 'content-type': 'application/json' }); res.end(JSON.stringify(v)) }
  try {
    if (u.pathname === '/write') { fs.writeFileSync(path.join(home, path.basename(q('name'))), q('text')); return send(200, { ok: true }) }
    if (u.pathname === '/read') { return send(200, { text: fs.readFileSync(path.join(home, path.basename(q('name'))), 'utf8') }) }
    if (u.pathname === '/alloc') { const hog = []; setInterval(() => { for (let i = 0; i < 8; i++) hog.push(Buffer.alloc(1 << 20, 1)) }, 5); return send(200, { ok: true }) }
    if (u.pathname === '/exists') { return send(200, { exists: fs.existsSync(q('path')) }) }
    if (u.pathname === '/probe') {
      const s = net.connect({ host: q('host'), port: Number(q('port')) })
      const done = (r) => { s.destroy(); send(200, { result: r }) }
      s.setTimeout(1500, () => done('timeout'))
      s.once('connect', () => done('connected'))
      s.once('error', (e) => done(e.code === 'ECONNREFUSED' ? 'refused' : e.code))
      return
    }
    send(200, { uid: process.getuid(), gid: process.getgid(), instanceId: process.env.STUDIOPOOL_INSTANCE_ID, user: process.env.STUDIOPOOL_USER || null, sessionUrl: process.env.STUDIOPOOL_SESSION_URL, home })
  } catch (e) { send(500, { error: String(e.message) }) }
}).listen(Number(process.env.PORT), '0.0.0.0')
`

/** `docker:` template settings that run TEST_APP in the test image. */
export function testAppSettings(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    image: TEST_IMAGE,
    command: ['node', '-e', TEST_APP],
    port: 8000,
    user: TEST_USER,
    env: { HOME: '/home/session' },
    mounts: [{ type: 'bind', source: '/usr', target: '/usr', readOnly: true }],
    pullPolicy: 'never',
    stopGrace: '3s',
    memory: '256m',
    ...extra,
  }
}
