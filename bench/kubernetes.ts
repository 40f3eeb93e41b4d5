/**
 * npm run bench:kubernetes — the kubernetes provider against the in-process fake API server (the
 * official client over HTTP, test/helpers/fake-kube-api.ts) with BENCH_PODS pods (default 500):
 *
 * - list() from the watch cache vs one LIST of the same pods over the API (what a polling provider
 *   pays every cycle), and the API requests 100 list() calls make (target: 0);
 * - how long a change (an eviction) takes to reach list() through the watch;
 * - how long the re-list after a `410 Gone` takes.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { newInstanceId } from '../src/domain/ids.js'
import { KubernetesProvider } from '../src/providers/kubernetes/index.js'
import { LABEL_INSTANCE, LABEL_POOL, LABEL_TEMPLATE } from '../src/providers/provider.js'
import { startFakeKubeApi } from '../test/helpers/fake-kube-api.js'
import { makeTemplate } from '../test/helpers/template.js'

const N = Number(process.env.BENCH_PODS ?? 500)
const log = pino({ level: 'silent' })
const op = { log }
const dir = mkdtempSync(join(tmpdir(), 'studiopool-bench-k8s-'))
const api = await startFakeKubeApi({ tls: false }) // the LIST below is a plain fetch
const provider = new KubernetesProvider({
  poolId: 'bench',
  dataDir: dir,
  settings: { kubeconfig: api.writeKubeconfig(dir), namespace: 'bench', retryBackoff: 50 },
  log,
})
await provider.init(op)
const template = makeTemplate({
  name: 'lab',
  provider: 'kubernetes',
  minFree: 0,
  port: 8888,
  settings: { image: 'img:1' },
})

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!
const ms = (x: number) => `${x.toFixed(2)} ms`

const t0 = performance.now()
const refs: string[] = []
for (let i = 0; i < N; i += 50) {
  const batch = await Promise.all(
    Array.from({ length: Math.min(50, N - i) }, () => {
      const id = newInstanceId()
      return provider.create(
        {
          id,
          poolId: 'bench',
          template,
          basePath: `/s/${id}/`,
          labels: { [LABEL_POOL]: 'bench', [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: 'lab' },
          progressUrl: 'http://127.0.0.1:9/p',
          progressToken: 't',
          appToken: 'a',
          ownerId: null,
          sessionUrl: 'http://127.0.0.1:9/s/',
        },
        op,
      )
    }),
  )
  refs.push(...batch.map((b) => b.ref))
}
const createMs = performance.now() - t0

const cache: number[] = []
const before = api.requests.length
for (let i = 0; i < 100; i++) {
  const s = performance.now()
  const l = await provider.list(op)
  cache.push(performance.now() - s)
  if (l.length < N) throw new Error(`list() has ${l.length} of ${N}`)
}
const calls = api.requests.length - before

const overApi: number[] = []
for (let i = 0; i < 20; i++) {
  const s = performance.now()
  const r = await fetch(`${api.url}/api/v1/namespaces/bench/pods?labelSelector=studiopool.io%2Fpool%3Dbench`, {
    headers: { authorization: `Bearer ${api.token}` },
  })
  await r.json()
  overApi.push(performance.now() - s)
}

const propagation: number[] = []
for (const ref of refs.slice(0, 20)) {
  const s = performance.now()
  api.evict('bench', ref.split('/')[0]!)
  for (;;) {
    const found = (await provider.describe([ref], op)).get(ref)
    if (found?.state === 'terminated') break
    await new Promise((r) => setImmediate(r))
  }
  propagation.push(performance.now() - s)
}

const expiredBefore = provider.watchStats.pods!.expired
api.compact()
const s410 = performance.now()
api.dropWatches()
while (provider.watchStats.pods!.expired === expiredBefore || !provider.watchStats.pods!.lists)
  await new Promise((r) => setTimeout(r, 1))
const relistMs = performance.now() - s410

console.log(`kubernetes provider, ${N} pods, fake API server over HTTP (official client)`)
console.log(`  create ${N} pods (50 at a time):        ${(createMs / 1000).toFixed(2)} s`)
console.log(`  list() from the watch cache:          p50 ${ms(pct(cache, 0.5))}, p99 ${ms(pct(cache, 0.99))}`)
console.log(
  `  one LIST of the same pods over HTTP:  p50 ${ms(pct(overApi, 0.5))}  (${(pct(overApi, 0.5) / pct(cache, 0.5)).toFixed(0)}x the cache)`,
)
console.log(`  API requests made by 100 list() calls: ${calls}  (target 0)`)
console.log(
  `  an eviction reaches list() in:        p50 ${ms(pct(propagation, 0.5))}, max ${ms(Math.max(...propagation))}`,
)
console.log(`  re-list after 410 Gone:               ${ms(relistMs)}`)

await provider.close()
await api.stop()
rmSync(dir, { recursive: true, force: true })
