/**
 * `npm run bench:shared` (issue 14): shared app pools through the real server and gateway, with
 * the demo app on the local provider, in one run:
 *
 * 1. Added latency: BENCH_REQUESTS (default 2000) sequential GETs through `/a/<template>/`
 *    (per-request routing) against the same GETs straight to an instance's own address, interleaved
 *    in rounds of 100; p50 and p99 of each and the difference (what the gateway's routing costs).
 * 2. Scale-out reaction under a step load: a sticky template on one instance (10 connections
 *    each, load factor 0.5) gets BENCH_STEP (default 20) users at once (each loads the page and
 *    opens its WebSocket, waiting on the progress page when no instance has room): the time until
 *    the pool decided (wanted size reached), until the new instances were ready, and until every
 *    user was connected.
 */
import { Agent, request } from 'undici'
import WebSocket from 'ws'
import { DEMO_APP_SCRIPT } from '../src/demo-app/index.js'
import { census, startSharedServer } from '../test/shared/harness.js'
import { waitFor } from '../test/helpers/wait.js'
import { fetchLogin } from '../test/web/helpers.js'

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000)
const STEP = Number(process.env.BENCH_STEP ?? 20)

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN
}
const f = (n: number) => (n < 10 ? n.toFixed(3) : n.toFixed(1))

const demo = (extra: Record<string, unknown>) => ({
  mode: 'shared',
  provider: 'local',
  maxInstances: 6,
  idleTimeout: 0,
  maxLifetime: 0,
  startTimeout: '30s',
  healthPath: '/healthz',
  pathMode: 'strip',
  local: { command: ['node', DEMO_APP_SCRIPT, '--port', '{{port}}'], stopGrace: '2s' },
  ...extra,
})

async function main(): Promise<void> {
  const s = await startSharedServer({
    api: demo({ routing: 'per-request', minInstances: 1, maxInstances: 1, maxConnectionsPerInstance: 50 }),
    step: demo({
      routing: 'sticky',
      minInstances: 1,
      maxConnectionsPerInstance: 10,
      loadFactor: 0.5,
      scaleInCooldown: '10m',
    }),
  })
  const agent = new Agent({ connections: 64 })
  const sockets: WebSocket[] = []
  try {
    const cookie = await fetchLogin(s.url, 'bench')
    await waitFor('the api and step instances', async () => census(await s.shared('api')).ready === 1, 60_000)
    await waitFor('the step instance', async () => census(await s.shared('step')).ready === 1, 60_000)
    const [row] = await s.running.store!.listInstances({ template: 'api', states: ['ready'] })
    const direct = row!.address!

    // 1. Added latency.
    const viaGateway: number[] = []
    const straight: number[] = []
    const once = async (url: string, headers: Record<string, string>) => {
      const t = performance.now()
      const res = await request(url, { headers, dispatcher: agent })
      await res.body.arrayBuffer()
      if (res.statusCode !== 200) throw new Error(`${url}: ${res.statusCode}`)
      return performance.now() - t
    }
    for (let i = 0; i < 50; i++) {
      await once(`${s.url}/a/api/healthz`, { cookie })
      await once(`${direct}/healthz`, {})
    }
    for (let round = 0; round < REQUESTS / 100; round++) {
      for (let i = 0; i < 100; i++) viaGateway.push(await once(`${s.url}/a/api/healthz`, { cookie }))
      for (let i = 0; i < 100; i++) straight.push(await once(`${direct}/healthz`, {}))
    }
    const p = (xs: number[]) => ({ p50: pct(xs, 50), p99: pct(xs, 99) })
    const g = p(viaGateway)
    const d = p(straight)
    console.log(`shared pool routing, ${viaGateway.length} sequential GETs each (per-request, 1 instance):`)
    console.log(`  direct to the instance   p50 ${f(d.p50)} ms   p99 ${f(d.p99)} ms`)
    console.log(`  through /a/api/          p50 ${f(g.p50)} ms   p99 ${f(g.p99)} ms`)
    console.log(
      `  added by the gateway     p50 ${f(g.p50 - d.p50)} ms   p99 ${f(g.p99 - d.p99)} ms   (ratio p50 ${f(g.p50 / d.p50)}×)`,
    )

    // 2. Scale-out reaction to a step from 0 to STEP users on one instance.
    const want = Math.ceil(STEP / (10 * 0.5))
    const cookies = await Promise.all(Array.from({ length: STEP }, (_, i) => fetchLogin(s.url, `step${i}`)))
    const t0 = performance.now()
    let decided = NaN
    let ready = NaN
    const watch = (async () => {
      await waitFor('the wanted size', async () => (await s.shared('step')).desired >= want, 60_000, 20)
      decided = performance.now() - t0
      await waitFor(`${want} ready`, async () => census(await s.shared('step')).ready >= want, 60_000, 20)
      ready = performance.now() - t0
    })()
    await Promise.all(
      cookies.map(async (c) => {
        const jar = new Map<string, string>([c.split('=', 2) as [string, string]])
        const header = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ')
        await waitFor(
          'a seat',
          async () => {
            const res = await request(`${s.url}/a/step/`, { headers: { cookie: header() }, dispatcher: agent })
            for (const sc of ([] as string[]).concat(res.headers['set-cookie'] ?? [])) {
              const pair = sc.split(';', 1)[0]!
              jar.set(pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1))
            }
            await res.body.arrayBuffer()
            return res.statusCode === 200
          },
          60_000,
          100,
        )
        const ws = new WebSocket(`${s.url.replace('http', 'ws')}/a/step/ws`, {
          headers: { cookie: header(), origin: s.url },
        })
        sockets.push(ws)
        await new Promise<void>((resolve, reject) => {
          ws.once('open', () => resolve())
          ws.once('error', reject)
        })
      }),
    )
    const served = performance.now() - t0
    await watch
    console.log(`scale-out under a step load: 0 → ${STEP} users on 1 instance (10 each, load factor 0.5 → ${want}):`)
    console.log(`  wanted size decided      ${Math.round(decided)} ms after the step`)
    console.log(`  ${want} instances ready       ${Math.round(ready)} ms after the step`)
    console.log(`  every user connected     ${Math.round(served)} ms after the step`)
  } finally {
    for (const ws of sockets) ws.terminate()
    await agent.close()
    await s.close()
  }
}

await main()
