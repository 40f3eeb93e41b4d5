/**
 * `npm run bench:gateway`: our gateway vs the app directly vs configurable-http-proxy (CHP, the
 * JupyterHub proxy), in one run, alternating targets in rounds, with a fixed connection count.
 *
 * Every part is its own process, so each one's CPU is its own: the app (node:http + ws), the
 * gateway under test, CHP, and the load client (undici Pool). The gateway's and CHP's CPU time
 * per request come from /proc/<pid>/stat (utime+stime) before and after each round.
 *
 * Env: BENCH_SECONDS (per round and target, default 2), BENCH_ROUNDS (default 6: rotations of the targets, then of their reverse),
 * BENCH_CONNECTIONS (default 50), BENCH_WS_IDLE (default 1000), BENCH_SIZES (default small,64k).
 * BENCH_PIN_PROXY / BENCH_PIN_CLIENT (taskset CPU lists, e.g. 1 and 0): every proxy (the gateways, CHP, nginx)
 * pinned the same way, the app and the load client elsewhere. nginx joins the run when it is on PATH (BENCH_NGINX=0 skips it).
 *
 * Roles (internal): `tsx bench/gateway.ts app|gateway|load`.
 */
import { fork, spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import os from 'node:os'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'

const SELF = fileURLToPath(import.meta.url)
// BENCH_AB="name:ENV=value,…;…" adds gateway processes with other settings to the same rounds, e.g.
// BENCH_AB="before:BENCH_GATEWAY_SRC=/tmp/wt/src" after `git worktree add /tmp/wt HEAD~1` (and a node_modules symlink).
const role = process.argv[2] ?? 'main'
const SMALL = Buffer.from('hello world\n')
const BIG = Buffer.alloc(64 * 1024, 'x')

function send(msg: unknown): void {
  process.send!(msg as never)
}

// ---------------------------------------------------------------- app
async function runApp(): Promise<void> {
  const { WebSocketServer } = await import('ws')
  const server = http.createServer((req, res) => {
    const body = req.url!.endsWith('/64k') ? BIG : SMALL
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length })
    res.end(body)
  })
  server.keepAliveTimeout = 60_000
  const wss = new WebSocketServer({ server, perMessageDeflate: false })
  wss.on('connection', (ws) => ws.on('message', (d, bin) => ws.send(d, { binary: bin })))
  server.listen(0, '127.0.0.1', () => send({ port: (server.address() as AddressInfo).port }))
}

// ---------------------------------------------------------------- gateway
async function runGateway(): Promise<void> {
  const { pino } = await import('pino')
  const { Registry } = await import('prom-client')
  // BENCH_GATEWAY_SRC: another checkout's src/ (a git worktree of an earlier commit), for A/B runs with BENCH_AB.
  const src = process.env.BENCH_GATEWAY_SRC
    ? new URL(`file://${process.env.BENCH_GATEWAY_SRC.replace(/\/+$/, '')}/`)
    : new URL('../src/', import.meta.url)
  const { RouteHub } = (await import(
    new URL('gateway/route-hub.js', src).href
  )) as typeof import('../src/gateway/route-hub.js')
  const { createGateway } = (await import(
    new URL('gateway/gateway.js', src).href
  )) as typeof import('../src/gateway/gateway.js')
  const { createTokenService } = (await import(
    new URL('gateway/tokens.js', src).href
  )) as typeof import('../src/gateway/tokens.js')
  const { createMemoryNonceLedger } = (await import(
    new URL('gateway/memory-nonce-ledger.js', src).href
  )) as typeof import('../src/gateway/memory-nonce-ledger.js')
  const { newInstanceId } = (await import(new URL('domain/ids.js', src).href)) as typeof import('../src/domain/ids.js')
  const secret = 'bench-secret-0123456789abcdef'
  const tokens = createTokenService(secret, { launchTtlMs: 60_000, cookieTtlMs: 3_600_000 })
  const hub = new RouteHub()
  const id = newInstanceId()
  hub.upsert({
    instanceId: id,
    ownerId: 'bench',
    template: 'bench',
    state: 'ready',
    address: process.env.APP_URL!,
    pathMode: 'strip',
    hostHeader: 'target',
    progress: 100,
    progressMessage: '',
    queuePosition: null,
    generation: 1,
    failureReason: null,
  })
  const gw = createGateway({
    config: {
      mode: 'path',
      sessionDomain: null,
      secret,
      launchTokenTtlMs: 60_000,
      cookieTtlMs: 3_600_000,
      cookieName: 'sp_session',
      adminAccess: false,
      defaultUrl: null,
      activityFlushMs: 5_000,
      upstreamTimeoutMs: 120_000,
      allowedOrigins: [],
      routeToReplace: null,
      stringToReplace: null,
    },
    publicUrl: 'http://127.0.0.1',
    routes: hub,
    activity: { recordActivity: async () => {} },
    nonces: createMemoryNonceLedger(),
    tokens,
    log: pino({ level: 'warn' }),
    metrics: new Registry(), // measured with metrics on, as in production
  })
  const addr = await gw.listen(0, '127.0.0.1')
  process.on('message', (m: { op: string }) => {
    if (m.op === 'usage') {
      if (global.gc) global.gc()
      send({ usage: { rss: process.memoryUsage().rss } })
    }
  })
  send({
    port: addr.port,
    id,
    cookie: `sp_session=${tokens.issueSession({ userId: 'bench', admin: false, groups: [] })}`,
  })
}

// ---------------------------------------------------------------- load client
interface LoadJob {
  op: 'http'
  /** The body size every answer must have. */
  bodyBytes: number
  origin: string
  path: string
  headers: Record<string, string>
  connections: number
  durationMs: number
}
interface WsJob {
  op: 'ws-rtt'
  url: string
  headers: Record<string, string>
  messages: number
}
interface WsIdleJob {
  op: 'ws-idle'
  url: string
  headers: Record<string, string>
  count: number
}

async function runLoad(): Promise<void> {
  const { Pool } = await import('undici')
  const { default: WebSocket } = await import('ws')
  const idle: InstanceType<typeof WebSocket>[] = []

  /**
   * `connections` closed loops, each one request at a time, over one undici Pool. Requests go out
   * through undici's raw dispatch interface (no promise or stream per request): the load client
   * shares the cores with what it measures, so the cheaper it is, the more the numbers say about
   * the target. The same client for every target. BENCH_CLIENT=request uses `pool.request` instead.
   */
  async function http1(job: LoadJob) {
    const pool = new Pool(job.origin, { connections: job.connections, pipelining: 1, keepAliveTimeout: 60_000 })
    const lat = new Float64Array(2_000_000)
    let n = 0
    let errors = 0
    let bytes = 0
    const end = performance.now() + job.durationMs
    const opts = { path: job.path, method: 'GET' as const, headers: job.headers }
    const record = (t: number) => {
      if (n < lat.length) lat[n] = performance.now() - t
      n++
    }
    const worker =
      process.env.BENCH_CLIENT === 'request'
        ? async () => {
            while (performance.now() < end) {
              const t = performance.now()
              try {
                const res = await pool.request(opts)
                let got = 0
                for await (const c of res.body) got += (c as Buffer).length
                if (res.statusCode !== 200 || got !== job.bodyBytes) errors++
                bytes += got
              } catch {
                errors++
              }
              record(t)
            }
          }
        : () =>
            new Promise<void>((resolve) => {
              const next = (): void => {
                if (performance.now() >= end) return resolve()
                const t = performance.now()
                let got = 0
                let ok = false
                pool.dispatch(opts, {
                  onConnect() {},
                  onHeaders(status: number) {
                    ok = status === 200
                    return true
                  },
                  onData(c: Buffer) {
                    got += c.length
                    return true
                  },
                  onComplete() {
                    // The whole body, or it is an error.
                    if (!ok || got !== job.bodyBytes) errors++
                    bytes += got
                    record(t)
                    next()
                  },
                  onError() {
                    errors++
                    record(t)
                    setImmediate(next)
                  },
                })
              }
              next()
            })
    const t0 = performance.now()
    await Promise.all(Array.from({ length: job.connections }, worker))
    const secs = (performance.now() - t0) / 1000
    await pool.close()
    const sorted = lat.subarray(0, Math.min(n, lat.length)).sort()
    return {
      requests: n,
      errors,
      bytes,
      rps: n / secs,
      p50: sorted[Math.floor(sorted.length * 0.5)]!,
      p99: sorted[Math.floor(sorted.length * 0.99)]!,
    }
  }

  async function wsRtt(job: WsJob) {
    const ws = new WebSocket(job.url, { headers: job.headers, perMessageDeflate: false })
    await new Promise((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('error', reject)
    })
    const payload = Buffer.from('ping-0123456789')
    const rtt: number[] = []
    for (let i = 0; i < job.messages + 200; i++) {
      const t = process.hrtime.bigint()
      await new Promise<void>((resolve) => {
        ws.once('message', () => resolve())
        ws.send(payload)
      })
      if (i >= 200) rtt.push(Number(process.hrtime.bigint() - t) / 1000)
    }
    ws.close()
    rtt.sort((a, b) => a - b)
    return { p50: rtt[Math.floor(rtt.length * 0.5)]!, p99: rtt[Math.floor(rtt.length * 0.99)]! }
  }

  async function wsIdle(job: WsIdleJob) {
    let opened = 0
    for (let i = 0; i < job.count; i += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, job.count - i) }, async () => {
          const ws = new WebSocket(job.url, { headers: job.headers, perMessageDeflate: false })
          await new Promise((resolve, reject) => {
            ws.once('open', resolve)
            ws.once('error', reject)
          })
          idle.push(ws)
          opened++
        }),
      )
    }
    return { opened }
  }

  process.on('message', (job: LoadJob | WsJob | WsIdleJob) => {
    const p = job.op === 'http' ? http1(job) : job.op === 'ws-rtt' ? wsRtt(job) : wsIdle(job)
    p.then(
      (result) => send({ result }),
      (err: Error) => send({ error: err.message }),
    )
  })
  send({ ready: true })
}

// ---------------------------------------------------------------- orchestration
const children: ChildProcess[] = []

function startChild(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ proc: ChildProcess; first: Record<string, unknown> }> {
  const prof =
    process.env.BENCH_PROF && args[0] === 'gateway' ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROF}`] : []
  const proc = fork(SELF, args, {
    execArgv: ['--import', 'tsx', '--expose-gc', ...prof],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  children.push(proc)
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${args[0]} did not start`)), 30_000)
    proc.once('message', (m) => {
      clearTimeout(t)
      resolve({ proc, first: m as Record<string, unknown> })
    })
    proc.once('exit', (code) => reject(new Error(`${args[0]} exited with ${code}`)))
  })
}

function ask<T>(proc: ChildProcess, msg: unknown, key: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${key} within ${timeoutMs} ms`)), timeoutMs)
    const on = (m: Record<string, unknown>) => {
      if (key in m || 'error' in m) {
        clearTimeout(t)
        proc.off('message', on)
        if ('error' in m) reject(new Error(String(m.error)))
        else resolve(m[key] as T)
      }
    }
    proc.on('message', on)
    proc.send(msg as never)
  })
}

/** utime and stime of a process, in microseconds (from /proc, clock ticks of 10 ms). */
function cpuOf(pid: number): { user: number; sys: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { user: Number(fields[11]) * 10_000, sys: Number(fields[12]) * 10_000 }
}

/** The whole machine's busy and total CPU time, in microseconds, from /proc/stat. */
function machineCpu(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number)
  const total = f.reduce((a, b) => a + b, 0)
  return { busy: (total - f[3]! - f[4]!) * 10_000, total: total * 10_000 }
}

async function freePort(): Promise<number> {
  const s = http.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const p = (s.address() as AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return p
}

async function waitHttp(url: string, headers: Record<string, string> = {}, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const res = await fetch(url, { headers })
      await res.body?.cancel()
      if (res.status < 500) return
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} not reachable`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

async function main(): Promise<void> {
  const seconds = Number(process.env.BENCH_SECONDS ?? 2)
  const rounds = Number(process.env.BENCH_ROUNDS ?? 6)
  const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
  const idleCount = Number(process.env.BENCH_WS_IDLE ?? 1000)

  const app = await startChild(['app'])
  const appUrl = `http://127.0.0.1:${app.first.port as number}`
  const gw = await startChild(['gateway'], { APP_URL: appUrl })
  const { port: gwPort, id, cookie } = gw.first as { port: number; id: string; cookie: string }

  const chpPort = await freePort()
  const chpApi = await freePort()
  const chpToken = 'bench-chp-token'
  const chp = spawn(
    process.execPath,
    [
      fileURLToPath(new URL('../node_modules/configurable-http-proxy/bin/configurable-http-proxy', import.meta.url)),
      '--ip',
      '127.0.0.1',
      '--port',
      String(chpPort),
      '--api-ip',
      '127.0.0.1',
      '--api-port',
      String(chpApi),
      '--log-level',
      'warn',
    ],
    {
      env: { ...process.env, CONFIGPROXY_AUTH_TOKEN: chpToken },
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  )
  children.push(chp)
  await waitHttp(`http://127.0.0.1:${chpApi}/api/routes`, { authorization: `token ${chpToken}` })
  const add = await fetch(`http://127.0.0.1:${chpApi}/api/routes/s/${id}`, {
    method: 'POST',
    headers: { authorization: `token ${chpToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ target: appUrl }),
  })
  if (add.status !== 201) throw new Error(`CHP route add: ${add.status}`)

  const load = await startChild(['load'])

  type Target = { name: string; origin: string; prefix: string; headers: Record<string, string>; pid: number | null }
  const targets: Target[] = [
    { name: 'direct', origin: appUrl, prefix: '', headers: {}, pid: null },
    {
      name: 'gateway',
      origin: `http://127.0.0.1:${gwPort}`,
      prefix: `/s/${id}`,
      headers: { cookie },
      pid: gw.proc.pid!,
    },
    { name: 'chp', origin: `http://127.0.0.1:${chpPort}`, prefix: `/s/${id}`, headers: {}, pid: chp.pid! },
  ]
  // BENCH_AB="name:ENV=value,ENV2=value;name2:…": more gateway processes with other settings, measured in the same rounds.
  for (const spec of (process.env.BENCH_AB ?? '').split(';').filter(Boolean)) {
    const [name, envs] = spec.split(':') as [string, string]
    const env = Object.fromEntries(
      (envs ?? '')
        .split(',')
        .filter(Boolean)
        .map((kv) => kv.split('=') as [string, string]),
    )
    const extra = await startChild(['gateway'], { APP_URL: appUrl, ...env })
    const e = extra.first as { port: number; id: string; cookie: string }
    targets.push({
      name,
      origin: `http://127.0.0.1:${e.port}`,
      prefix: `/s/${e.id}`,
      headers: { cookie: e.cookie },
      pid: extra.proc.pid!,
    })
  }
  const nginxPort = await startNginx(appUrl)
  for (const t of targets) await waitHttp(`${t.origin}${t.prefix}/small`, t.headers)
  if (nginxPort !== null) await waitHttp(`http://127.0.0.1:${nginxPort}/s/${id}/small`)
  // Pinned the same way: every proxy (the gateways, CHP, nginx) on BENCH_PIN_PROXY's CPUs, the app and the load client on BENCH_PIN_CLIENT's.
  const pinNote = pin(
    targets.filter((t) => t.pid !== null).map((t) => t.pid!),
    [app.proc.pid!, load.proc.pid!],
  )

  const cores = os.cpus().length
  /** CPU of every process in the run (µs), and of the whole machine, so "who used the cores" is known. */
  type Agg = {
    requests: number
    errors: number
    secs: number
    user: number
    sys: number
    app: number
    load: number
    busy: number
    total: number
    p50: number[]
    p99: number[]
  }
  const results = new Map<string, Agg>()
  const sumCpu = (pid: number) => {
    const c = cpuOf(pid)
    return c.user + c.sys
  }
  const run = async (t: Target, size: string, ms: number) => {
    const b = {
      t: t.pid ? cpuOf(t.pid) : { user: 0, sys: 0 },
      app: sumCpu(app.proc.pid!),
      load: sumCpu(load.proc.pid!),
      m: machineCpu(),
    }
    const r = await ask<{ requests: number; errors: number; rps: number; p50: number; p99: number }>(
      load.proc,
      {
        op: 'http',
        origin: t.origin,
        path: `${t.prefix}/${size}`,
        headers: t.headers,
        connections,
        durationMs: ms,
        bodyBytes: size === '64k' ? BIG.length : SMALL.length,
      },
      'result',
      ms + 30_000,
    )
    const a = {
      t: t.pid ? cpuOf(t.pid) : { user: 0, sys: 0 },
      app: sumCpu(app.proc.pid!),
      load: sumCpu(load.proc.pid!),
      m: machineCpu(),
    }
    return {
      ...r,
      user: a.t.user - b.t.user,
      sys: a.t.sys - b.t.sys,
      app: a.app - b.app,
      load: a.load - b.load,
      busy: a.m.busy - b.m.busy,
      total: a.m.total - b.m.total,
    }
  }

  const loadavg = os.loadavg()
  console.log(
    `gateway benchmark: ${rounds} rounds × ${seconds}s per target and size (after a 1 s warm-up each), ${connections} connections, targets alternating; ${cores} cores shared by the load client, the app, the proxy under test and anything else running (load average before start ${loadavg.map((x) => x.toFixed(1)).join(' ')}). ${process.env.BENCH_NOTE ?? ''}`,
  )
  const sizes = (process.env.BENCH_SIZES ?? 'small,64k').split(',').filter(Boolean) // '' : WebSocket and memory only
  for (const size of sizes) {
    for (const t of targets) await run(t, size, 1000) // warm-up (JIT, keep-alive pools)
    for (let round = 0; round < rounds; round++) {
      // Rotations of the list, then of the reversed list: over 2n rounds every target runs after every
      // other one equally often (whatever ran just before leaves the app and the machine in some state).
      const k = round % targets.length
      const list = Math.floor(round / targets.length) % 2 === 0 ? targets : [...targets].reverse()
      const order = list.slice(k).concat(list.slice(0, k))
      for (const t of order) {
        const r = await run(t, size, seconds * 1000)
        const key = `${size}:${t.name}`
        const a = results.get(key) ?? {
          requests: 0,
          errors: 0,
          secs: 0,
          user: 0,
          sys: 0,
          app: 0,
          load: 0,
          busy: 0,
          total: 0,
          p50: [],
          p99: [],
        }
        a.requests += r.requests
        a.errors += r.errors
        a.secs += r.requests / r.rps
        a.user += r.user
        a.sys += r.sys
        a.app += r.app
        a.load += r.load
        a.busy += r.busy
        a.total += r.total
        a.p50.push(r.p50)
        a.p99.push(r.p99)
        results.set(key, a)
      }
    }
  }

  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const f = (n: number, d = 0, w = 9) => (Number.isNaN(n) ? '-' : n.toFixed(d)).padStart(w)
  console.log(
    '\nHTTP GET (body: small = 12 B, 64k = 64 KiB). CPU in µs per request from /proc (10 ms ticks); "cores" = share of the machine\'s cores busy during the runs',
  )
  console.log(
    'size   target      req/s   p50 ms   p99 ms   proxy CPU (user+sys)   app CPU  load CPU   proxy cores  app+load cores  others cores  errors  vs CHP req/s  vs CHP CPU',
  )
  const summary: Record<string, number> = {}
  for (const size of sizes) {
    const chpA = results.get(`${size}:chp`)!
    const chpRps = chpA.requests / chpA.secs
    const chpCpu = (chpA.user + chpA.sys) / chpA.requests
    for (const name of targets.map((t) => t.name)) {
      const a = results.get(`${size}:${name}`)!
      const rps = a.requests / a.secs
      const proxy = name === 'direct' ? NaN : (a.user + a.sys) / a.requests
      const wall = a.secs * 1e6
      const ours = a.user + a.sys + a.app + a.load
      // The machine's busy time not spent in the three processes: other work sharing the cores.
      const others = Math.max(0, (a.busy - ours) / wall)
      summary[`${size}:${name}:rps`] = rps
      summary[`${size}:${name}:cpu`] = proxy
      summary[`${size}:${name}:app`] = a.app / a.requests
      summary[`${size}:${name}:load`] = a.load / a.requests
      summary[`${size}:${name}:others`] = others
      const split =
        name === 'direct'
          ? '-'.padStart(21)
          : `${f(proxy, 1, 6)} (${f(a.user / a.requests, 1, 5)}+${f(a.sys / a.requests, 1, 5)})`.padStart(21)
      console.log(
        `${size.padEnd(6)} ${name.padEnd(8)} ${f(rps)} ${f(med(a.p50), 2, 8)} ${f(med(a.p99), 2, 8)} ${split} ${f(a.app / a.requests, 1)} ${f(a.load / a.requests, 1)} ${f((a.user + a.sys) / wall, 2, 13)} ${f((a.app + a.load) / wall, 2, 15)} ${f(others, 2, 13)} ${f(a.errors, 0, 7)}  ${name === 'direct' ? '           -' : (rps / chpRps).toFixed(2).padStart(11) + '×'}  ${name === 'direct' ? '         -' : ((chpCpu / proxy).toFixed(2) + '× less').padStart(10)}`,
      )
    }
  }
  // What the cores allow: every request costs load client + app + proxy CPU, and there are `cores` of them.
  const small = (n: string) =>
    summary[`small:${n}:app`]! + summary[`small:${n}:load`]! + (n === 'direct' ? 0 : summary[`small:${n}:cpu`]!)
  if (sizes.includes('small')) {
    const g = small('gateway')
    const c = small('chp')
    console.log(
      `\nCPU per small request, all three processes: gateway path ${g.toFixed(1)} µs, CHP path ${c.toFixed(1)} µs, direct ${small('direct').toFixed(1)} µs.`,
    )
    console.log(
      `Ceiling on ${cores} fully free cores: gateway ≤ ${Math.round((cores * 1e6) / g)} req/s (and ≤ ${Math.round(1e6 / summary['small:gateway:cpu']!)} req/s for its one thread); CHP ≤ ${Math.round(Math.min((cores * 1e6) / c, 1e6 / summary['small:chp:cpu']!))} req/s.`,
    )
    console.log(
      `3× CHP's measured ${Math.round(summary['small:chp:rps']!)} req/s = ${Math.round(3 * summary['small:chp:rps']!)} req/s would need ≤ ${((cores * 1e6) / (3 * summary['small:chp:rps']!)).toFixed(1)} µs of CPU per request for load client + app + gateway together (they take ${(summary['small:gateway:app']! + summary['small:gateway:load']!).toFixed(1)} µs without the gateway).`,
    )
  }

  // WebSocket round trips: sequential messages, direct vs every proxy (gateway, CHP, nginx when
  // installed, BENCH_AB gateways), each run twice, alternating, in the same run. A sequential
  // round trip is mostly process wake-ups (client → proxy → app and back); on an otherwise idle
  // machine each wake-up from a sleeping core costs tens of µs, which a proxy's two extra hops
  // pay twice. So it is measured twice: as the machine is, and with the cores kept awake by
  // a lowest-priority spinner (nice 19: it yields to every benchmark process). Both vary a lot
  // from run to run: compare proxies within one run, not across runs.
  const wsTargets = targets.map((t) => ({
    name: t.name,
    url: `ws://127.0.0.1:${t.name === 'direct' ? (app.first.port as number) : new URL(t.origin).port}${t.prefix}/ws`,
    headers: t.headers,
    pid: t.pid,
  }))
  if (nginxPort !== null)
    wsTargets.push({ name: 'nginx', url: `ws://127.0.0.1:${nginxPort}/s/${id}/ws`, headers: {}, pid: null })
  type Rtt = { p50: number; p99: number; cpu?: number }
  const WS_MESSAGES = Number(process.env.BENCH_WS_MESSAGES ?? 2000)
  const rttRound = async (): Promise<Map<string, Rtt>> => {
    const runs = new Map<string, Rtt[]>()
    for (let i = 0; i < 2; i++) {
      for (const t of i === 0 ? wsTargets : [...wsTargets].reverse()) {
        const before = t.pid ? sumCpu(t.pid) : 0
        const r = await ask<Rtt>(
          load.proc,
          { op: 'ws-rtt', url: t.url, headers: t.headers, messages: WS_MESSAGES },
          'result',
          60_000 + WS_MESSAGES * 20, // a loaded machine can take a millisecond per round trip
        )
        // The proxy's CPU per round trip (both directions, plus the handshake spread over the run): steadier than the RTT on a busy machine.
        const cpu = t.pid ? (sumCpu(t.pid) - before) / (WS_MESSAGES + 200) : NaN
        runs.set(t.name, [...(runs.get(t.name) ?? []), { ...r, cpu }])
      }
    }
    return new Map(
      [...runs].map(([n, rs]) => [
        n,
        {
          p50: Math.min(...rs.map((x) => x.p50)),
          p99: Math.min(...rs.map((x) => x.p99)),
          cpu: rs.reduce((a, x) => a + x.cpu!, 0) / rs.length,
        },
      ]),
    )
  }
  const idleRtt = await rttRound()
  // One spinner, bounded in time itself (60 s) should this process die before killing it.
  const spinners = Array.from({ length: 1 }, () =>
    spawn('nice', ['-n', '19', process.execPath, '-e', 'const end = Date.now() + 60000; while (Date.now() < end) {}'], {
      stdio: 'ignore',
    }),
  )
  let awakeRtt: Awaited<ReturnType<typeof rttRound>>
  try {
    await new Promise((r) => setTimeout(r, 300))
    awakeRtt = await rttRound()
  } finally {
    for (const sp of spinners) sp.kill('SIGKILL')
  }
  console.log(`\nWebSocket round trip, ${WS_MESSAGES} sequential messages (best of 2 runs each, alternating)${pinNote}`)
  for (const [label, r] of [
    ['machine as is', idleRtt],
    ['cores kept awake', awakeRtt],
  ] as const) {
    const d = r.get('direct')!
    console.log(`  ${label}:`)
    for (const t of wsTargets) {
      const x = r.get(t.name)!
      console.log(
        `    ${t.name.padEnd(8)} p50 ${x.p50.toFixed(1).padStart(6)} µs   p99 ${x.p99.toFixed(1).padStart(6)} µs` +
          (t.name === 'direct'
            ? ''
            : `   added p50 ${(x.p50 - d.p50).toFixed(1).padStart(5)} µs, p99 ${(x.p99 - d.p99).toFixed(1).padStart(6)} µs` +
              (x.cpu === undefined || Number.isNaN(x.cpu)
                ? ''
                : `   proxy CPU ${x.cpu!.toFixed(1)} µs per round trip`)),
      )
    }
  }

  // Memory with idle WebSockets: in the benchmarked gateway (after all the load above), and in a fresh one.
  const measureIdle = async (proc: ChildProcess, port: number, gid: string, gcookie: string) => {
    const before = (await ask<{ rss: number }>(proc, { op: 'usage' }, 'usage', 10_000)).rss / 2 ** 20
    const opened = await ask<{ opened: number }>(
      load.proc,
      { op: 'ws-idle', url: `ws://127.0.0.1:${port}/s/${gid}/ws`, headers: { cookie: gcookie }, count: idleCount },
      'result',
      120_000,
    )
    await new Promise((r) => setTimeout(r, 500))
    const after = (await ask<{ rss: number }>(proc, { op: 'usage' }, 'usage', 10_000)).rss / 2 ** 20
    return { before, after, opened: opened.opened }
  }
  const fresh = await startChild(['gateway'], { APP_URL: appUrl })
  const f0 = fresh.first as { port: number; id: string; cookie: string }
  const memFresh = await measureIdle(fresh.proc, f0.port, f0.id, f0.cookie)
  const memUsed = await measureIdle(gw.proc, gwPort, id, cookie)
  console.log(
    `\nGateway RSS (after gc), fresh process: ${memFresh.before.toFixed(1)} MB idle, ${memFresh.after.toFixed(1)} MB with ${memFresh.opened} open idle WebSockets`,
  )
  console.log(
    `Gateway RSS (after gc), after the load above: ${memUsed.before.toFixed(1)} MB, ${memUsed.after.toFixed(1)} MB with ${memUsed.opened} more open idle WebSockets`,
  )
  const rssAfter = memFresh.after

  console.log('\nTargets')
  if (sizes.includes('small')) {
    const cpuSmall = summary['small:gateway:cpu']!
    const ratio = summary['small:gateway:rps']! / summary['small:chp:rps']!
    console.log(
      `  gateway CPU per small request ≤ 70 µs:   ${cpuSmall.toFixed(1)} µs  ${cpuSmall <= 70 ? 'PASS' : 'FAIL'}  (CHP ${summary['small:chp:cpu']!.toFixed(1)} µs, ${(summary['small:chp:cpu']! / cpuSmall).toFixed(2)}× ours)`,
    )
    console.log(`  req/s ≥ 3× CHP (small):                 ${ratio.toFixed(2)}×  ${ratio >= 3 ? 'PASS' : 'FAIL'}`)
  }
  for (const [label, r] of [
    ['machine as is', idleRtt],
    ['cores kept awake', awakeRtt],
  ] as const) {
    const d = r.get('direct')!.p50
    const added = r.get('gateway')!.p50 - d
    const chpAdded = r.get('chp')!.p50 - d
    console.log(
      `  added WebSocket RTT p50 ≤ 40 µs (${label}):${' '.repeat(17 - label.length)}${added.toFixed(1)} µs  ${added <= 40 ? 'PASS' : 'FAIL'}`,
    )
    console.log(
      `  added WebSocket RTT p50 ≤ CHP's (${label}):${' '.repeat(18 - label.length)}${added.toFixed(1)} µs vs ${chpAdded.toFixed(1)} µs  ${added <= chpAdded ? 'PASS' : 'FAIL'}`,
    )
  }
  console.log(
    `  RSS ≤ 150 MB with ${idleCount} idle WebSockets (fresh gateway): ${rssAfter.toFixed(1)} MB  ${rssAfter <= 150 ? 'PASS' : 'FAIL'}`,
  )
}

/** `taskset` every proxy and every client process (all their threads) as BENCH_PIN_PROXY / BENCH_PIN_CLIENT say; a note for the report. */
function pin(proxies: number[], clients: number[]): string {
  const p = process.env.BENCH_PIN_PROXY
  const c = process.env.BENCH_PIN_CLIENT
  const set = (cpus: string | undefined, pids: number[]) => {
    if (!cpus) return
    for (const pid of pids) {
      const r = spawnSync('taskset', ['-a', '-pc', cpus, String(pid)], { stdio: 'ignore' })
      if (r.status !== 0) throw new Error(`taskset -a -pc ${cpus} ${pid} failed`)
    }
  }
  set(p, proxies)
  set(c, clients)
  return p || c ? `; proxies pinned to CPU ${p ?? 'any'}, app and load client to CPU ${c ?? 'any'}` : '; not pinned'
}

/** nginx as a third proxy when it is installed (BENCH_NGINX=0 skips it): a plain WebSocket-capable reverse proxy. */
async function startNginx(appUrl: string): Promise<number | null> {
  if (process.env.BENCH_NGINX === '0') return null
  const bin = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).stdout.trim()
  if (!bin) return null
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-nginx-'))
  const port = await freePort()
  const conf = `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  upstream app { server ${new URL(appUrl).host}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location ~ ^/s/[a-z2-7]+(/.*)$ {
      proxy_pass http://app$1;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $http_connection;
      proxy_buffering off;
    }
  }
}
`
  writeFileSync(path.join(dir, 'nginx.conf'), conf)
  const args = ['-p', dir, '-c', path.join(dir, 'nginx.conf')]
  // Pinned like the other proxies, from the start (its worker is forked after it starts).
  const cpus = process.env.BENCH_PIN_PROXY
  const proc = cpus
    ? spawn('taskset', ['-c', cpus, bin, ...args], { stdio: ['ignore', 'ignore', 'inherit'] })
    : spawn(bin, args, { stdio: ['ignore', 'ignore', 'inherit'] })
  children.push(proc)
  return port
}

async function killAll(): Promise<void> {
  // Ask first (a profiled gateway writes its profile on exit), then make sure.
  for (const c of children) if (c.connected) c.disconnect()
  await new Promise((r) => setTimeout(r, process.env.BENCH_PROF ? 3000 : 200))
  for (const c of children) {
    if (c.pid && c.exitCode === null && c.signalCode === null) {
      try {
        process.kill(c.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
}

// A child never outlives the benchmark: when the IPC channel goes, so does it.
if (role !== 'main') process.on('disconnect', () => process.exit(0))
if (role === 'app') void runApp()
else if (role === 'gateway') void runGateway()
else if (role === 'load') void runLoad()
else {
  const limit = setTimeout(
    () => {
      console.error('benchmark timed out')
      void killAll().then(() => process.exit(2))
    },
    Number(process.env.BENCH_TIMEOUT_MS ?? 600_000),
  )
  main().then(
    () => {
      clearTimeout(limit)
      void killAll().then(() => process.exit(0))
    },
    (err: unknown) => {
      console.error(err)
      void killAll().then(() => process.exit(1))
    },
  )
}
