// The load client of bench:api, in its own worker thread (its own event loop and core), so that the
// server's latency is not the client's. Plain JavaScript: it needs only undici.
import { parentPort, workerData } from 'node:worker_threads'
import { Pool } from 'undici'

const { url, concurrency } = workerData
const pool = new Pool(url, { connections: concurrency, pipelining: 1, keepAliveTimeout: 30_000 })

async function run({ kind, key, count, ms, sampleEvery, userPrefix, expectIds, raw }) {
  const lat = []
  const errors = {}
  let next = 0
  const deadline = ms ? performance.now() + ms : Infinity
  const t0 = performance.now()
  const body =
    kind === 'warm'
      ? (i) => JSON.stringify({ command: 'REQUEST_RSTUDIO', payload: { userId: `${userPrefix}${i}` } })
      : () => '{"command":"GET_STATUS","payload":{}}'
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const i = next++
        if ((count !== undefined && i >= count) || performance.now() > deadline) return
        const s = performance.now()
        const r = await pool.request({
          path: '/api/commands',
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: body(i),
        })
        const sample = !sampleEvery || i % sampleEvery === 0
        let json
        if (sample) json = await r.body.json()
        else for await (const _chunk of r.body) void _chunk
        lat.push(performance.now() - s)
        let bad
        if (r.statusCode !== 200) bad = `HTTP ${r.statusCode} ${json?.error?.code ?? ''}`.trim()
        else if (sample && kind === 'warm' && json.outcome !== 'warm') bad = `outcome ${json.outcome}`
        else if (sample && kind === 'status' && expectIds !== undefined && json.instances?.length !== expectIds)
          bad = `${json.instances?.length} ids, want ${expectIds}`
        if (bad) errors[bad] = (errors[bad] ?? 0) + 1
      }
    }),
  )
  const secs = (performance.now() - t0) / 1000
  lat.sort((a, b) => a - b)
  const pct = (p) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] ?? NaN
  const out = {
    n: lat.length,
    rps: lat.length / secs,
    p50: pct(50),
    p99: pct(99),
    max: lat[lat.length - 1] ?? NaN,
    errors,
  }
  // raw: every latency and the wall time too, so that several runs combine into one distribution.
  return raw ? { ...out, lat, secs } : out
}

parentPort.on('message', async (msg) => {
  if (msg.type === 'close') {
    await pool.close()
    parentPort.postMessage({ type: 'closed' })
    return
  }
  parentPort.postMessage({ type: 'result', id: msg.id, result: await run(msg.job) })
})
