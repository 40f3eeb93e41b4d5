/**
 * `npm run bench:widget`: what the warning banner's injection (docs/widget.md) costs per HTML page,
 * in one run: the same 20 KiB page through the gateway for a template that did not opt in (passed
 * as is) and for one that did (injected), each with an identity and a gzip body, in alternating
 * rounds with a fixed number of connections. The app is a child process; the gateway and the load
 * client share this process, whose CPU per request (process.cpuUsage) is measured per round, so the
 * ratio against the pass-through is the injection's own cost (decode, scan, re-frame).
 *
 * Env: BENCH_SECONDS (per round and case, default 2), BENCH_ROUNDS (default 3, after one uncounted warm-up round), BENCH_CONNECTIONS (default 20).
 * Role (internal): `tsx bench/widget.ts app`.
 */
import { fork } from 'node:child_process'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { pino } from 'pino'
import { Pool } from 'undici'
import { newInstanceId } from '../src/domain/ids.js'
import type { RouteEntry } from '../src/domain/routes.js'
import { createGateway } from '../src/gateway/gateway.js'
import { createMemoryNonceLedger } from '../src/gateway/memory-nonce-ledger.js'
import { RouteHub } from '../src/gateway/route-hub.js'
import { createTokenService } from '../src/gateway/tokens.js'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 20)
const SECRET = 'bench-widget-secret-0123456789abcdef'

const PAGE = Buffer.from(
  '<!doctype html><html><head><meta charset="utf-8"><title>bench</title></head><body>' +
    '<p>'.padEnd(20 * 1024, 'x') +
    '</p></body></html>',
)
const GZ = gzipSync(PAGE)

if (process.argv[2] === 'app') {
  const server = http.createServer((req, res) => {
    const gz = req.url!.includes('gz')
    const body = gz ? GZ : PAGE
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-length': body.length,
      etag: '"b1"',
      ...(gz ? { 'content-encoding': 'gzip' } : {}),
    })
    res.end(body)
  })
  server.keepAliveTimeout = 60_000
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as AddressInfo).port }))
} else await main()

function entry(address: string, injectWidget: boolean): RouteEntry {
  return {
    instanceId: newInstanceId(),
    ownerId: 'bench',
    template: injectWidget ? 'widget' : 'plain',
    state: 'ready',
    address,
    pathMode: 'strip',
    hostHeader: 'target',
    progress: 100,
    progressMessage: '',
    queuePosition: null,
    generation: 1,
    failureReason: null,
    ...(injectWidget ? { injectWidget: true } : {}),
  }
}

async function main(): Promise<void> {
  const child = fork(fileURLToPath(import.meta.url), ['app'], { execArgv: ['--import', 'tsx'] })
  const port = await new Promise<number>((r) => child.once('message', (m) => r((m as { port: number }).port)))
  const address = `http://127.0.0.1:${port}`
  const plain = entry(address, false)
  const widget = entry(address, true)
  const hub = new RouteHub()
  const tokens = createTokenService(SECRET, { launchTtlMs: 60_000, cookieTtlMs: 3_600_000 })
  const gw = createGateway({
    config: {
      mode: 'path',
      sessionDomain: null,
      secret: SECRET,
      launchTokenTtlMs: 60_000,
      cookieTtlMs: 3_600_000,
      cookieName: 'sp',
      adminAccess: false,
      defaultUrl: null,
      activityFlushMs: 60_000,
      upstreamTimeoutMs: 120_000,
      allowedOrigins: [],
      routeToReplace: null,
      stringToReplace: null,
    },
    publicUrl: 'http://127.0.0.1:1',
    routes: hub,
    activity: { recordActivity: async () => {} },
    nonces: createMemoryNonceLedger(),
    tokens,
    log: pino({ level: 'silent' }),
    controls: {
      status: async () => undefined,
      keepWorking: async () => undefined,
      stop: async () => {},
      suspend: async () => {},
    },
  })
  hub.reset([plain, widget])
  const at = await gw.listen(0, '127.0.0.1')
  const cookie = `sp=${tokens.issueSession({ userId: 'bench', admin: false, groups: [] })}`
  const client = new Pool(`http://127.0.0.1:${at.port}`, { connections: CONNECTIONS, pipelining: 1 })

  const cases = [
    { name: 'pass-through identity', path: `/s/${plain.instanceId}/p` },
    { name: 'injected identity', path: `/s/${widget.instanceId}/p` },
    { name: 'pass-through gzip', path: `/s/${plain.instanceId}/gz` },
    { name: 'injected gzip', path: `/s/${widget.instanceId}/gz` },
  ]
  const totals = new Map(cases.map((c) => [c.name, { n: 0, cpuUs: 0, ms: 0, injected: 0 }]))
  const warmUp = { n: 0, cpuUs: 0, ms: 0, injected: 0 }
  // Round 0 warms the JIT, the keep-alive pools and zlib up, and is not counted.
  for (let round = 0; round <= ROUNDS; round++) {
    for (const c of round % 2 ? [...cases].reverse() : cases) {
      const t = round === 0 ? warmUp : totals.get(c.name)!
      const end = performance.now() + SECONDS * 1000
      const cpu0 = process.cpuUsage()
      const t0 = performance.now()
      await Promise.all(
        Array.from({ length: CONNECTIONS }, async () => {
          while (performance.now() < end) {
            const r = await client.request({
              path: c.path,
              method: 'GET',
              headers: { cookie, 'accept-encoding': 'gzip', 'sec-fetch-dest': 'document' },
            })
            const body = await r.body.text()
            if (r.statusCode !== 200) throw new Error(`${c.name}: ${r.statusCode}`)
            t.n++
            if (body.includes('data-studiopool-widget')) t.injected++
          }
        }),
      )
      const cpu = process.cpuUsage(cpu0)
      t.ms += performance.now() - t0
      t.cpuUs += cpu.user + cpu.system
    }
  }
  await client.close()
  await gw.close()
  child.kill()

  console.log(
    `bench:widget — a ${(PAGE.length / 1024).toFixed(0)} KiB HTML page through the gateway, ${CONNECTIONS} connections, ${ROUNDS} rounds × ${SECONDS}s per case`,
  )
  console.log('case                      req/s    CPU µs/req (gateway+client)   vs pass-through   injected')
  const base = (name: string) => {
    const t = totals.get(name)!
    return t.cpuUs / t.n
  }
  for (const c of cases) {
    const t = totals.get(c.name)!
    const per = t.cpuUs / t.n
    const ref = base(c.name.replace('injected', 'pass-through'))
    console.log(
      `${c.name.padEnd(24)} ${((t.n / t.ms) * 1000).toFixed(0).padStart(7)}    ${per.toFixed(0).padStart(8)}                    ${(per / ref).toFixed(2).padStart(6)}×        ${t.injected}/${t.n}`,
    )
  }
}
