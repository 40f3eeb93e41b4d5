/**
 * The HA scenario (issue 16): load through the cluster (ha-cluster.ts) — API clients through nginx,
 * WebSockets through every replica's gateway — while the leader is killed, another leader frozen for
 * a while, and every replica restarted in turn. Returns what it measured and every broken invariant;
 * test/ha/ha.test.ts asserts on it, bench/ha.ts prints it.
 */
import pg from 'pg'
import { request } from 'undici'
import WebSocket from 'ws'
import { createTokenService } from '../../src/gateway/tokens.js'
import { pgClientConfig } from '../../src/store/dialects.js'
import { waitFor } from '../helpers/wait.js'
import { ADMIN_KEY, Cluster, REQUESTER_KEY, SECRET, type Replica } from './ha-cluster.js'

export interface ScenarioOptions {
  readonly storeUrl: string
  readonly poolId: string
  readonly users?: number
  readonly apiClients?: number
  readonly websockets?: number
  readonly freezeMs?: number
  readonly log?: (line: string) => void
}

export interface EventFigures {
  readonly event: string
  /** From the signal to another replica reporting it leads (null: not a leader event). */
  readonly takeoverMs: number | null
  /** API requests that failed (status ≥ 400 or no answer) from the event's start to its end + 3 s. */
  readonly failedRequests: number
  readonly requests: number
  /** The failures without an answer, by error (code and message) and how many. */
  readonly errors: Record<string, number>
}

export interface ScenarioResult {
  readonly events: EventFigures[]
  /** End to end: assigned through one replica (its answer received) until another's gateway serves it (its answer received). */
  readonly propagation: {
    readonly samples: number
    readonly p50Ms: number
    readonly p99Ms: number
    readonly maxMs: number
  }
  /**
   * Store to route table (studiopool_route_propagation_seconds of all three replicas) while the load
   * runs: every change from the start of the probes to the first event. p50/p99 are the histogram
   * bucket bounds they fall in; `within250` the share at or under 250 ms.
   */
  readonly storeToTable: Histo
  /** The same from the replicas' start, with the start-up burst (20 cold starts at once). */
  readonly storeToTableAll: Histo
  readonly apiRequests: number
  readonly wsMessages: number
  readonly maxActive: number
  readonly violations: string[]
  readonly totalMs: number
}

export interface Histo {
  readonly samples: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly within250: number
}

const countBy = (xs: string[]) => {
  const m: Record<string, number> = {}
  for (const x of xs) m[x] = (m[x] ?? 0) + 1
  return m
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! : NaN
}

export async function runScenario(o: ScenarioOptions): Promise<ScenarioResult> {
  const t0 = performance.now()
  const log = o.log ?? (() => {})
  const USERS = o.users ?? 20
  const CAP = USERS + 8
  const cluster = new Cluster({
    storeUrl: o.storeUrl,
    poolId: o.poolId,
    maxInstances: CAP,
    minFree: 2,
    idleTimeout: '45s',
  })
  const tokens = createTokenService(SECRET, { launchTtlMs: 60_000, cookieTtlMs: 3_600_000 })
  const cookie = (userId: string) => `studiopool_session=${tokens.issueSession({ userId, admin: false, groups: [] })}`
  const db = new pg.Client({ connectionString: pgClientConfig(o.storeUrl).connectionString })
  const violations: string[] = []
  const events: EventFigures[] = []
  const calls: { at: number; ok: boolean; error?: string }[] = []
  const idsByUser = new Map<string, Set<string>>()
  const ownerById = new Map<string, string>()
  let stopping = false
  let wsMessages = 0
  let maxActive = 0
  const sockets: Sock[] = []
  const background: Promise<void>[] = []

  const cmd = async (base: string, command: string, payload: unknown) => {
    const res = await request(`${base}/api/commands`, {
      method: 'POST',
      dispatcher: cluster.http,
      headers: { authorization: `Bearer ${REQUESTER_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command, payload }),
      headersTimeout: 30_000,
    })
    const text = await res.body.text()
    try {
      return { status: res.statusCode, json: JSON.parse(text) as any }
    } catch {
      // Not ours: the load balancer's own error page (its status says which).
      return { status: res.statusCode, json: { error: { code: 'NOT_JSON', message: text.slice(0, 120) } } as any }
    }
  }
  const noteGrant = (userId: string, id: string) => {
    const ids = idsByUser.get(userId) ?? new Set<string>()
    ids.add(id)
    idsByUser.set(userId, ids)
    const owner = ownerById.get(id)
    if (owner && owner !== userId) violations.push(`instance ${id} handed to ${owner} and ${userId}`)
    ownerById.set(id, userId)
  }

  try {
    await db.connect()
    await cluster.start()
    log(`cluster up: nginx ${cluster.lbUrl}, replicas ${cluster.replicas.map((r) => r.port).join(', ')}`)
    const users = Array.from({ length: USERS }, (_, i) => `u${String(i).padStart(2, '0')}`)

    // Sessions for every user, through the load balancer, until ready.
    const grants = new Map<string, string>()
    for (const u of users) {
      const r = await cmd(cluster.lbUrl, 'REQUEST_SESSION', { userId: u })
      if (r.status !== 200) throw new Error(`REQUEST_SESSION ${u}: ${r.status} ${JSON.stringify(r.json)}`)
      grants.set(u, r.json.instanceId)
      noteGrant(u, r.json.instanceId)
    }
    const idle = await cmd(cluster.lbUrl, 'REQUEST_SESSION', { userId: 'idle-control' })
    await waitFor(
      'every session ready',
      async () => {
        for (const u of users) {
          const s = await cmd(cluster.lbUrl, 'GET_STATUS', { instanceId: grants.get(u), userId: u })
          if (s.json.instance?.state !== 'ready') return false
        }
        return true
      },
      120_000,
      500,
    )
    log(`${USERS} sessions ready after ${Math.round(performance.now() - t0)} ms`)

    // 200 WebSockets: each session has some on every replica, each sending a message every 2 s.
    const wsTotal = o.websockets ?? 200
    for (let k = 0; k < wsTotal; k++) {
      const u = users[k % USERS]!
      sockets.push(
        new Sock(
          cluster,
          k % 3,
          grants.get(u)!,
          cookie(u),
          violations,
          () => wsMessages++,
          () => stopping,
        ),
      )
    }
    await waitFor('every WebSocket open', () => sockets.every((s) => s.open), 60_000, 50).catch((err: Error) => {
      const closed = sockets.filter((s) => !s.open)
      const why = closed.slice(0, 5).map((s) => `${s.id}@replica ${s.replica}: ${s.lastError}`)
      throw new Error(`${err.message}: ${closed.length} not open (${why.join('; ')})`)
    })
    log(`${sockets.length} WebSockets open`)

    // 50 API clients through nginx: REQUEST_SESSION again and again (idempotent), two or three per user.
    for (let c = 0; c < (o.apiClients ?? 50); c++) {
      const u = users[c % USERS]!
      background.push(
        (async () => {
          while (!stopping) {
            const at = performance.now()
            try {
              const r = await cmd(cluster.lbUrl, 'REQUEST_SESSION', { userId: u })
              calls.push({ at, ok: r.status === 200 })
              if (r.status === 200) noteGrant(u, r.json.instanceId)
              else violations.push(`REQUEST_SESSION ${u}: ${r.status} ${JSON.stringify(r.json).slice(0, 200)}`)
            } catch (err) {
              const e = err as Error & { code?: string }
              calls.push({ at, ok: false, error: `${e.code ?? e.name}: ${e.message}`.slice(0, 120) })
            }
            await new Promise((r) => setTimeout(r, 1000))
          }
        })(),
      )
    }
    // The cap, and one live instance per user, sampled from the store throughout.
    background.push(
      (async () => {
        while (!stopping) {
          const a = await db.query(
            `select count(*)::int as n from instances where state in ('provisioning','starting','ready','suspended','stopping')`,
          )
          maxActive = Math.max(maxActive, a.rows[0].n)
          if (a.rows[0].n > CAP) violations.push(`${a.rows[0].n} active instances over the cap ${CAP}`)
          const d = await db.query(
            `select owner_id, count(*)::int as n from instances where owner_id is not null and state in ('queued','provisioning','starting','ready','suspended') group by owner_id having count(*) > 1`,
          )
          for (const row of d.rows) violations.push(`user ${row.owner_id} has ${row.n} live instances`)
          await new Promise((r) => setTimeout(r, 250))
        }
      })(),
    )
    await new Promise((r) => setTimeout(r, 3000))

    // Route propagation: a session assigned through one replica, served by the others' gateways.
    const before = await propagationBuckets(cluster)
    const delays: number[] = []
    // Only warm hits give samples (two each); a cold start (the warm pool drained by the load) gives
    // none, so probe until 12 warm hits' worth or 30 probes, whichever comes first.
    for (let k = 0; k < 30 && delays.length < 24; k++) {
      const a = cluster.replicas[k % 3]!
      const others = cluster.replicas.filter((r) => r !== a)
      const user = `probe${k}`
      const r = await cmd(a.url, 'REQUEST_SESSION', { userId: user })
      const id = r.json.instanceId as string
      const assignedAt = performance.now()
      if (r.json.state !== 'ready') {
        await waitFor(
          'the probe session ready',
          async () =>
            (await cmd(a.url, 'GET_STATUS', { instanceId: id, userId: user })).json.instance?.state === 'ready',
          60_000,
          100,
        )
        continue // a cold start: its readiness, not the assignment, is what the others learn of last
      }
      await Promise.all(
        others.map(async (b) => {
          await waitFor('the route on another replica', () => serves(cluster, b, id, cookie(user)), 5000, 2)
          delays.push(performance.now() - assignedAt)
        }),
      )
      await cmd(a.url, 'DELETE', { instanceId: id })
    }
    for (const r of cluster.replicas) {
      const mode = (await cluster.readyz(r))?.replica?.routes?.mode
      if (mode !== 'notify') violations.push(`replica ${r.index} follows routes by ${mode}, not by notifications`)
    }
    const after = await propagationBuckets(cluster)
    const storeToTable = histo(after, before)
    const storeToTableAll = histo(after)
    log(
      `store to route table: under load ${JSON.stringify(storeToTable)}, from the start ${JSON.stringify(storeToTableAll)}`,
    )
    log(
      `route propagation: ${delays.length} samples, p50 ${pct(delays, 50).toFixed(1)} ms, p99 ${pct(delays, 99).toFixed(1)} ms`,
    )

    const event = async (name: string, fn: () => Promise<number | null>) => {
      const start = performance.now()
      log(`event: ${name}`)
      const takeoverMs = await fn()
      const end = performance.now() + 3000
      await new Promise((r) => setTimeout(r, 3000))
      const inWindow = calls.filter((c) => c.at >= start && c.at <= end)
      const figures = {
        event: name,
        takeoverMs,
        requests: inWindow.length,
        failedRequests: inWindow.filter((c) => !c.ok).length,
        errors: countBy(inWindow.flatMap((c) => (c.error ? [c.error] : []))),
      }
      log(`  ${JSON.stringify(figures)}`)
      events.push(figures)
    }
    const takeover = async (from: Replica, since: number) => {
      const others = cluster.replicas.filter((r) => r !== from)
      await waitFor('another replica to lead', () => cluster.leader(others), 30_000, 50)
      return Math.round(performance.now() - since)
    }

    // 1. kill -9 of the leader.
    await event('kill -9 of the leader', async () => {
      const l = (await waitFor('a leader', () => cluster.leader(), 15_000, 100))!
      l.expectDown = true
      const at = performance.now()
      process.kill(l.pid!, 'SIGKILL')
      const ms = await takeover(l, at)
      await cluster.stop(l, 'SIGKILL')
      cluster.spawn(l)
      await cluster.waitReady(l)
      await cluster.waitServing(l)
      l.expectDown = false
      return ms
    })
    // 2. SIGSTOP of the (new) leader for freezeMs; it must step down when it resumes.
    await event(`SIGSTOP of the leader for ${Math.round((o.freezeMs ?? 20_000) / 1000)} s`, async () => {
      const l = (await waitFor('a leader', () => cluster.leader(), 15_000, 100))!
      const at = performance.now()
      process.kill(l.pid!, 'SIGSTOP')
      const ms = await takeover(l, at)
      await new Promise((r) => setTimeout(r, Math.max(0, (o.freezeMs ?? 20_000) - (performance.now() - at))))
      process.kill(l.pid!, 'SIGCONT')
      await waitFor(
        'the resumed replica to know it does not lead',
        async () => (await cluster.readyz(l))?.replica?.worker?.leading === false,
        15_000,
        100,
      )
      const leaders = await Promise.all(
        cluster.replicas.map(async (r) => (await cluster.readyz(r))?.replica?.worker?.leading),
      )
      if (leaders.filter(Boolean).length !== 1)
        violations.push(`after the freeze ${leaders.filter(Boolean).length} replicas say they lead`)
      return ms
    })
    // 3. A rolling restart (SIGTERM, wait, start, ready, taking requests again), one replica at a
    // time, as docs/ha.md tells operators: the next one stops only once the balancer uses this one.
    await event('rolling restart of all three', async () => {
      for (const r of cluster.replicas) {
        r.expectDown = true
        await cluster.stop(r, 'SIGTERM')
        cluster.spawn(r)
        await cluster.waitReady(r)
        await cluster.waitServing(r)
        r.expectDown = false
      }
      return null
    })

    // The end: active sessions were never culled, the idle one was (the load runs on until the
    // leader has culled it: its idle timeout counts from its readiness); every user kept one instance.
    await waitFor(
      'the idle control session to be culled',
      async () =>
        (await db.query(`select 1 from assignments where user_id = 'idle-control' and end_reason is not null`))
          .rowCount! > 0,
      90_000,
      500,
    ).catch(() => {}) // reported below
    stopping = true
    await Promise.all(background)
    for (const s of sockets) s.close()
    for (const u of users) {
      const ids = idsByUser.get(u)
      if (ids?.size !== 1)
        violations.push(`user ${u} was given ${ids?.size ?? 0} instances: ${[...(ids ?? [])].join(', ')}`)
    }
    const ended = await db.query(
      `select instance_id, user_id, end_reason from assignments where end_reason is not null and user_id like 'u%'`,
    )
    for (const row of ended.rows) violations.push(`the active session of ${row.user_id} ended (${row.end_reason})`)
    const overlap =
      await db.query(`select a.instance_id from assignments a join assignments b on a.instance_id = b.instance_id and a.id < b.id
      and (a.ended_at is null or a.ended_at > b.started_at)`)
    for (const row of overlap.rows) violations.push(`instance ${row.instance_id} had two assignments at once`)
    const idleEnd = await db.query(`select end_reason from assignments where user_id = 'idle-control'`)
    if (idleEnd.rows[0]?.end_reason !== 'idle')
      violations.push(
        `the idle control session (${idle.json.instanceId}) was not culled: ${JSON.stringify(idleEnd.rows)}`,
      )
    return {
      events,
      propagation: {
        samples: delays.length,
        p50Ms: pct(delays, 50),
        p99Ms: pct(delays, 99),
        maxMs: Math.max(...delays),
      },
      storeToTable,
      storeToTableAll,
      apiRequests: calls.length,
      wsMessages,
      maxActive,
      violations,
      totalMs: Math.round(performance.now() - t0),
    }
  } finally {
    stopping = true
    for (const s of sockets) s.close()
    await Promise.allSettled(background)
    await cluster.close()
    await db.end().catch(() => {})
  }
}

/** The replicas' studiopool_route_propagation_seconds buckets (cumulative), summed. */
async function propagationBuckets(cluster: Cluster): Promise<Map<number, number>> {
  const buckets = new Map<number, number>()
  for (const r of cluster.replicas) {
    const res = await request(`${r.url}/metrics`, {
      dispatcher: cluster.http,
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    })
    const text = await res.body.text()
    for (const m of text.matchAll(/^studiopool_route_propagation_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)) {
      const le = m[1] === '+Inf' ? Infinity : Number(m[1])
      buckets.set(le, (buckets.get(le) ?? 0) + Number(m[2]))
    }
  }
  return buckets
}

/** Percentile bounds of `now` minus `base` (the changes between two readings). */
function histo(now: Map<number, number>, base = new Map<number, number>()): Histo {
  const sorted = [...now].map(([le, n]) => [le, n - (base.get(le) ?? 0)] as const).sort((a, b) => a[0] - b[0])
  const count = sorted.at(-1)?.[1] ?? 0
  const bound = (q: number) => (sorted.find(([, n]) => n >= q * count)?.[0] ?? NaN) * 1000
  const le250 = sorted.find(([le]) => le === 0.25)?.[1] ?? 0
  return { samples: count, p50Ms: bound(0.5), p99Ms: bound(0.99), within250: count ? le250 / count : NaN }
}

/** Whether replica b's gateway serves the instance to this user's cookie (its route table has the owner). */
async function serves(cluster: Cluster, b: Replica, id: string, cookie: string): Promise<boolean> {
  const res = await request(`${b.url}/s/${id}/`, { dispatcher: cluster.http, headers: { cookie, accept: 'text/html' } })
  const text = await res.body.text()
  return res.statusCode === 200 && text.includes(`studiopool demo session ${id}`)
}

/**
 * One WebSocket to a replica's gateway, echoing a message every 2 s. A close while its replica is
 * meant to be up is a violation; otherwise it reconnects to the next replica that is up.
 */
class Sock {
  ws: WebSocket | undefined
  open = false
  #timer: NodeJS.Timeout | undefined
  #closed = false
  lastError = ''
  constructor(
    readonly cluster: Cluster,
    public replica: number,
    readonly id: string,
    readonly cookie: string,
    readonly violations: string[],
    readonly onEcho: () => void,
    readonly stopping: () => boolean,
  ) {
    this.#connect()
  }

  #connect(): void {
    const r = this.cluster.replicas[this.replica]!
    const ws = new WebSocket(`ws://127.0.0.1:${r.port}/s/${this.id}/ws`, { headers: { cookie: this.cookie } })
    this.ws = ws
    ws.on('open', () => {
      this.open = true
      this.#timer = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send('ping'), 2000)
    })
    ws.on('message', () => this.onEcho())
    ws.on('error', (err) => (this.lastError = err.message))
    ws.on('unexpected-response', (_req, res) => {
      this.lastError = `HTTP ${res.statusCode}`
      ws.terminate()
    })
    ws.on('close', (code) => {
      const wasOpen = this.open
      this.open = false
      clearInterval(this.#timer)
      if (this.#closed || this.stopping()) return
      if (wasOpen && !r.expectDown) this.violations.push(`a WebSocket to replica ${r.index} (up) closed (${code})`)
      const next = this.cluster.replicas.find((x) => !x.expectDown && x.alive())
      this.replica = next ? next.index : (this.replica + 1) % this.cluster.replicas.length
      setTimeout(() => this.#connect(), 100)
    })
  }

  close(): void {
    this.#closed = true
    clearInterval(this.#timer)
    this.ws?.terminate()
  }
}
