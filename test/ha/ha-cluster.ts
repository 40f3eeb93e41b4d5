/**
 * The HA test's cluster (issue 16, docs/ha.md): three `studiopool serve` replicas (role all) on one
 * Postgres schema and one shared data directory (the local provider's records), behind nginx
 * (Debian's nginx-light) on loopback, every process started here and stopped by its pid.
 * Used by test/ha/ha.test.ts and bench/ha.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { BIN, DEMO_APP, killAll } from '../helpers/server-process.js'
import { freePort, waitFor } from '../helpers/wait.js'

export const NGINX = '/usr/sbin/nginx'
export const REQUESTER_KEY = 'ha-test-requester-key-0123456789abcdef'
export const ADMIN_KEY = 'ha-test-admin-key-0123456789abcdef0123'
export const SECRET = 'ha-test-gateway-secret-0123456789abcdef0123'

export interface ClusterOptions {
  /** A postgres:// URL (its own schema). SQLite is refused: it is single-process. */
  readonly storeUrl: string
  readonly poolId: string
  readonly replicas?: number
  /** The template's cap. */
  readonly maxInstances: number
  readonly minFree: number
  readonly idleTimeout: string
}

export class Replica {
  child: ChildProcess | undefined
  output = ''
  /** True while the scenario means it to be down (killed, restarting): its WebSockets may drop then. */
  expectDown = false
  constructor(
    readonly index: number,
    readonly port: number,
  ) {}
  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }
  get pid(): number | undefined {
    return this.child?.pid
  }
  alive(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null
  }
}

/** Refuses a store several processes cannot share, with the reason. */
export function refuseSingleProcessStore(url: string): void {
  if (url.startsWith('sqlite:'))
    throw new Error(
      'the HA test needs Postgres: SQLite is single-process (one studiopool process per SQLite file), so several replicas cannot share it. Set STUDIOPOOL_TEST_PG to a postgres:// URL.',
    )
  if (!/^postgres(ql)?:\/\//.test(url)) throw new Error(`the HA test needs a postgres:// store URL, not ${url}`)
}

export class Cluster {
  readonly dir = mkdtempSync(join(tmpdir(), 'sp-ha-'))
  readonly dataDir = join(this.dir, 'data')
  readonly replicas: Replica[] = []
  readonly http = new Agent({ connections: 256, keepAliveTimeout: 2000, pipelining: 1 })
  nginx: ChildProcess | undefined
  lbPort = 0

  constructor(readonly opts: ClusterOptions) {
    refuseSingleProcessStore(opts.storeUrl)
  }

  get lbUrl(): string {
    return `http://127.0.0.1:${this.lbPort}`
  }

  async start(): Promise<void> {
    if (!existsSync(NGINX)) throw new Error(`${NGINX} is missing: apt-get install nginx-light (listed in .ci/run)`)
    this.lbPort = await freePort()
    for (let i = 0; i < (this.opts.replicas ?? 3); i++) this.replicas.push(new Replica(i, await freePort()))
    writeFileSync(join(this.dir, 'studiopool.yaml'), this.#config())
    await this.#startNginx()
    for (const r of this.replicas) this.spawn(r)
    for (const r of this.replicas) await this.waitReady(r)
  }

  #config(): string {
    const o = this.opts
    return `server:
  dataDir: ${JSON.stringify(this.dataDir)}
  logLevel: warn
  publicUrl: ${this.lbUrl}
  shutdownGrace: 3s
pool:
  id: ${o.poolId}
store:
  driver: postgres
  url: ${JSON.stringify(o.storeUrl)}
  poolSize: 8
worker:
  interval: 5s
gateway:
  activityFlush: 2s
templates:
  demo:
    provider: local
    minFree: ${o.minFree}
    maxInstances: ${o.maxInstances}
    idleTimeout: ${o.idleTimeout}
    healthPath: /healthz
    startTimeout: 60s
    pathMode: strip
    local:
      command: [node, ${JSON.stringify(DEMO_APP)}, --port, "{{port}}", --base-path, "{{basePath}}"]
      stopGrace: 2s
`
  }

  spawn(r: Replica): void {
    r.output = ''
    const child = spawn(
      process.execPath,
      [BIN, 'serve', '--config', join(this.dir, 'studiopool.yaml'), '--port', String(r.port)],
      {
        cwd: this.dir,
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: this.dir,
          ARENA_POOL_SERVICE_KEY: REQUESTER_KEY,
          STUDIOPOOL_ADMIN_KEY: ADMIN_KEY,
          STUDIOPOOL_SECRET: SECRET,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    const keep = (b: Buffer) => (r.output = (r.output + b.toString()).slice(-20_000))
    child.stdout!.on('data', keep)
    child.stderr!.on('data', keep)
    r.child = child
  }

  async waitReady(r: Replica, ms = 60_000): Promise<void> {
    await waitFor(
      `replica ${r.index} ready`,
      async () => {
        if (!r.alive()) throw new Error(`replica ${r.index} exited:\n${r.output}`)
        return (await this.readyz(r))?.status === 'ready'
      },
      ms,
      100,
    )
  }

  /**
   * Waits until the load balancer sends the replica session requests again: its own
   * studiopool_requests_total (a new process counts from 0) is above zero. Ready is not enough with
   * passive health: nginx keeps a replica it saw refuse connections out for fail_timeout, and a
   * restart quicker than that, repeated on the next replica, leaves nginx no live upstream (502).
   */
  async waitServing(r: Replica, ms = 30_000): Promise<void> {
    await waitFor(
      `replica ${r.index} to take requests from the load balancer`,
      async () => {
        if (!r.alive()) throw new Error(`replica ${r.index} exited:\n${r.output}`)
        const res = await request(`${r.url}/metrics`, {
          dispatcher: this.http,
          headers: { authorization: `Bearer ${ADMIN_KEY}` },
        })
        const text = await res.body.text()
        let n = 0
        for (const m of text.matchAll(/^studiopool_requests_total\{[^}]*\} (\d+)$/gm)) n += Number(m[1])
        return n > 0
      },
      ms,
      100,
    )
  }

  /** A replica's /readyz body, or undefined when it does not answer within 1 s. */
  async readyz(r: Replica): Promise<ReadyBody | undefined> {
    try {
      const res = await request(`${r.url}/readyz`, { dispatcher: this.http, headersTimeout: 1000, bodyTimeout: 1000 })
      return (await res.body.json()) as ReadyBody
    } catch {
      return undefined
    }
  }

  /** The replica that says it leads the worker (undefined: none says so now). */
  async leader(among = this.replicas): Promise<Replica | undefined> {
    const answers = await Promise.all(among.map(async (r) => ({ r, b: r.alive() ? await this.readyz(r) : undefined })))
    return answers.find((a) => a.b?.replica?.worker?.leading)?.r
  }

  /** Stops a replica with a signal and waits for it to exit (SIGKILL after 15 s). */
  async stop(r: Replica, signal: NodeJS.Signals): Promise<void> {
    const child = r.child
    if (!child || !r.alive()) return
    const exited = new Promise((res) => child.once('exit', res))
    process.kill(child.pid!, signal)
    const t = setTimeout(() => r.alive() && process.kill(child.pid!, 'SIGKILL'), 15_000)
    await exited
    clearTimeout(t)
  }

  async #startNginx(): Promise<void> {
    const d = join(this.dir, 'nginx')
    mkdirSync(d, { recursive: true })
    writeFileSync(join(d, 'nginx.conf'), nginxConfig(d, this.lbPort, this.replicas))
    const child = spawn(NGINX, ['-p', d, '-c', join(d, 'nginx.conf'), '-e', join(d, 'error.log')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()))
    this.nginx = child
    await waitFor(
      'nginx to listen',
      async () => {
        if (child.exitCode !== null) throw new Error(`nginx exited: ${out}`)
        try {
          const res = await request(`${this.lbUrl}/nginx-alive`, { dispatcher: this.http })
          await res.body.dump()
          return res.statusCode === 204
        } catch {
          return false
        }
      },
      10_000,
      50,
    )
  }

  async close(): Promise<void> {
    for (const r of this.replicas) {
      if (r.alive()) {
        try {
          process.kill(r.pid!, 'SIGCONT')
        } catch {
          // gone
        }
        await this.stop(r, 'SIGKILL')
      }
    }
    if (this.nginx && this.nginx.exitCode === null) {
      const n = this.nginx
      const exited = new Promise((res) => n.once('exit', res))
      process.kill(n.pid!, 'SIGTERM') // the master; it stops its worker
      await exited
    }
    killAll(this.dataDir)
    await this.http.close()
    if (!process.env.STUDIOPOOL_HA_KEEP) rmSync(this.dir, { recursive: true, force: true })
  }
}

export interface ReadyBody {
  readonly status: string
  readonly replica?: {
    readonly worker: { readonly leading: boolean; readonly epoch: number | null } | null
    readonly routes: { readonly mode: string; readonly lastDelayMs: number | null } | null
  }
}

/**
 * The load balancer settings of docs/ha.md: passive health (a failed or timed-out upstream is taken
 * out for fail_timeout), requests retried on the next replica when one fails before answering (the
 * API is safe to retry: REQUEST_SESSION is idempotent per user and template), WebSocket upgrade and
 * long timeouts for sessions, a short read timeout for the API so a frozen replica costs one retry.
 */
export function nginxConfig(dir: string, port: number, replicas: readonly Replica[]): string {
  const servers = replicas.map((r) => `    server 127.0.0.1:${r.port} max_fails=1 fail_timeout=3s;`).join('\n')
  // As root, workers would run as nobody and could not use the temp paths under our 0700 directory.
  const user = process.getuid?.() === 0 ? 'user root;\n' : ''
  return `${user}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  upstream studiopool {
${servers}
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    proxy_http_version 1.1;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_connect_timeout 1s;
    proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
    proxy_next_upstream_tries 3;
    proxy_next_upstream_timeout 15s;
    location = /nginx-alive { return 204; }
    location /s/ {
      proxy_pass http://studiopool;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
      proxy_buffering off;
    }
    location / {
      proxy_pass http://studiopool;
      proxy_set_header Connection "";
      proxy_read_timeout 4s;
    }
  }
}
`
}
