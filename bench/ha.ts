/**
 * npm run bench:ha — the HA scenario of issue 16 (test/ha/ha-scenario.ts) alone, its figures printed:
 * three `serve` replicas on one Postgres behind nginx-light, 50 API clients and 200 WebSockets, kill -9
 * of the leader, SIGSTOP of the next leader for 20 s, a rolling restart. Targets (docs/ha.md):
 * take-over ≤ 5 s after a kill and ≤ 15 s after a freeze, route propagation p99 ≤ 250 ms, zero failed
 * requests to surviving replicas.
 *
 * STUDIOPOOL_HA_STORE: the store (default a throw-away schema of STUDIOPOOL_TEST_PG). An SQLite store
 * is refused (exit 2): SQLite is single-process.
 */
import { randomBytes } from 'node:crypto'
import { loadavg } from 'node:os'
import { dropSchemas, freshPgUrl } from '../test/helpers/pg.js'
import { refuseSingleProcessStore } from '../test/ha/ha-cluster.js'
import { runScenario } from '../test/ha/ha-scenario.js'

const given = process.env.STUDIOPOOL_HA_STORE
try {
  if (given) refuseSingleProcessStore(given)
} catch (err) {
  process.stderr.write(`bench:ha: ${(err as Error).message}\n`)
  process.exit(2)
}
const load0 = loadavg()[0]!
try {
  const r = await runScenario({
    storeUrl: given ?? (await freshPgUrl()),
    poolId: `bench-ha-${randomBytes(3).toString('hex')}`,
    log: (l) => process.stdout.write(`${l}\n`),
  })
  const f = (n: number | null) => (n === null || Number.isNaN(n) ? '–' : `${Math.round(n)}`)
  process.stdout.write(
    `\nHA figures (load average ${load0.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end, ${(r.totalMs / 1000).toFixed(0)} s)\n`,
  )
  for (const e of r.events)
    process.stdout.write(
      `  ${e.event.padEnd(32)} take-over ${f(e.takeoverMs).padStart(6)} ms   failed API requests ${e.failedRequests}/${e.requests}\n`,
    )
  process.stdout.write(
    `  route propagation, store → route table, from the start (20 cold starts at once): p50 ≤ ${f(r.storeToTableAll.p50Ms)} ms, p99 ≤ ${f(r.storeToTableAll.p99Ms)} ms (${r.storeToTableAll.samples} changes, ${(r.storeToTableAll.within250 * 100).toFixed(1)}% ≤ 250 ms)\n`,
  )
  process.stdout.write(
    `  route propagation, store → route table, under load: p50 ≤ ${f(r.storeToTable.p50Ms)} ms, p99 ≤ ${f(r.storeToTable.p99Ms)} ms (${r.storeToTable.samples} changes, ${(r.storeToTable.within250 * 100).toFixed(1)}% ≤ 250 ms)\n`,
  )
  process.stdout.write(
    `  route propagation, end to end (assigned on one replica → served by another's gateway): p50 ${f(r.propagation.p50Ms)} ms, p99 ${f(r.propagation.p99Ms)} ms (${r.propagation.samples} samples)\n`,
  )
  process.stdout.write(
    `  ${r.apiRequests} API requests, ${r.wsMessages} WebSocket echoes, at most ${r.maxActive} active instances\n`,
  )
  process.stdout.write(`  violations: ${r.violations.length ? r.violations.join('; ') : 'none'}\n`)
  const [kill, freeze] = r.events
  const judge = (ok: boolean) => (ok ? 'met' : 'MISSED')
  process.stdout.write(
    [
      `targets: take-over ≤ 5 s after kill -9: ${judge((kill?.takeoverMs ?? Infinity) <= 5000)}`,
      `take-over ≤ 15 s after SIGSTOP: ${judge((freeze?.takeoverMs ?? Infinity) <= 15_000)}`,
      `propagation p99 ≤ 250 ms (store → table, under load): ${judge(r.storeToTable.within250 >= 0.99)}`,
      `zero failed requests: ${judge(r.events.every((e) => e.failedRequests === 0))}`,
    ].join('; ') + '\n',
  )
  if (r.violations.length) process.exitCode = 1
} finally {
  await dropSchemas()
}
