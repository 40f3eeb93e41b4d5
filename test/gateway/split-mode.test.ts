import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { after, before, describe, test } from 'node:test'
import { Agent, request } from 'undici'
import type { RouteEntry } from '../../src/domain/routes.js'
import { deriveAppToken } from '../../src/domain/app-token.js'
import { createTokenService } from '../../src/gateway/tokens.js'
import { waitFor } from '../helpers/wait.js'
import { route, SECRET, startUpstream } from './helpers.js'
import type { Upstream } from './helpers.js'

const FEED = fileURLToPath(new URL('./fixtures/feed-server.ts', import.meta.url))
const GW = fileURLToPath(new URL('./fixtures/gateway-role.ts', import.meta.url))
const KEY = 'proxy-key-for-the-split-test'

interface Child {
  proc: ChildProcess
  messages: Record<string, unknown>[]
}

async function spawnChild(file: string, env: Record<string, string>): Promise<Child & { port: number }> {
  const proc = fork(file, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const messages: Record<string, unknown>[] = []
  proc.on('message', (m) => messages.push(m as Record<string, unknown>))
  const exited = new Promise<never>((_, rej) =>
    proc.once('exit', (code) => rej(new Error(`${file} exited with ${code}`))),
  )
  exited.catch(() => {})
  const port: number = await Promise.race([
    waitFor(
      `${file} port`,
      () => messages.find((m) => typeof m.port === 'number')?.port as number | undefined,
      20_000,
    ) as Promise<number>,
    exited,
  ])
  return { proc, messages, port }
}

function stop(c: Child | undefined): Promise<void> {
  if (!c || c.proc.exitCode !== null || c.proc.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    c.proc.once('exit', () => resolve())
    c.proc.kill('SIGKILL')
  })
}

describe('split mode: gateway and API feed in two processes', () => {
  let app: Upstream
  let feed: (Child & { port: number }) | undefined
  let gw: (Child & { port: number }) | undefined
  const client = new Agent()
  const tokens = createTokenService(SECRET, { launchTtlMs: 60_000, cookieTtlMs: 3_600_000 })
  const cookie = `sp_session=${tokens.issueSession({ userId: 'alice', admin: false, groups: [] })}`
  let r1: RouteEntry, r2: RouteEntry, r3: RouteEntry

  const status = async (id: string) => {
    const r = await request(`http://127.0.0.1:${gw!.port}/s/${id}/echo`, { dispatcher: client, headers: { cookie } })
    await r.body.dump()
    return r.statusCode
  }
  const sendFeed = (msg: unknown) => feed!.proc.send(msg as never)

  before(async () => {
    app = await startUpstream()
    r1 = route({ address: app.url, ownerId: 'alice' })
    r2 = route({ address: app.url, ownerId: 'alice' })
    r3 = route({ address: app.url, ownerId: 'alice' })
    feed = await spawnChild(FEED, { FEED_PORT: '0', FEED_KEY: KEY, FEED_ROUTES: JSON.stringify([r1]) })
    gw = await spawnChild(GW, { SERVICE_URL: `http://127.0.0.1:${feed.port}`, PROXY_KEY: KEY, GW_SECRET: SECRET })
  })
  after(async () => {
    await stop(gw)
    await stop(feed)
    await client.close()
    await app.close()
  })

  test('routes from the feed are served; a new route is routable within 1 s', async () => {
    await waitFor('r1 routable', async () => (await status(r1.instanceId)) === 200, 10_000)
    assert.equal(await status(r2.instanceId), 404)
    const t0 = performance.now()
    sendFeed({ op: 'upsert', route: r2 })
    await waitFor('r2 routable within 1 s', async () => (await status(r2.instanceId)) === 200, 1000)
    const took = performance.now() - t0
    assert.ok(took < 1000, `took ${took} ms`)
  })

  test('launch tokens are single-use through the remote ledger; activity reaches the API', async () => {
    const t = tokens.issueLaunch({ instanceId: r1.instanceId, userId: 'alice' })
    const first = await request(`http://127.0.0.1:${gw!.port}/s/${r1.instanceId}/?sp_token=${t}`, {
      dispatcher: client,
    })
    assert.equal(first.statusCode, 302)
    await first.body.dump()
    const second = await request(`http://127.0.0.1:${gw!.port}/s/${r1.instanceId}/?sp_token=${t}`, {
      dispatcher: client,
    })
    assert.equal(second.statusCode, 401)
    await second.body.dump()
    await waitFor(
      'activity at the feed',
      () =>
        feed!.messages.some(
          (m) => Array.isArray(m.activity) && (m.activity as { id: string }[]).some((e) => e.id === r1.instanceId),
        ),
      5000,
    )
  })

  test("a template's upstreamHeaders travel with the route; the gateway process computes the app token from its own copy of the secret", async () => {
    const r4 = route({ address: app.url, ownerId: 'alice', upstreamHeaders: { Authorization: 'token {{appToken}}' } })
    sendFeed({ op: 'upsert', route: r4 })
    await waitFor('r4 routable', async () => (await status(r4.instanceId)) === 200, 5000)
    const r = await request(`http://127.0.0.1:${gw!.port}/s/${r4.instanceId}/echo`, {
      dispatcher: client,
      headers: { cookie, 'x-forwarded-user': 'root' },
    })
    const seen = ((await r.body.json()) as { headers: Record<string, string> }).headers
    assert.equal(seen.authorization, `token ${deriveAppToken(SECRET, r4.instanceId, r4.generation)}`)
    assert.equal(seen['x-forwarded-user'], 'alice')
  })

  test('with the API down existing routes keep working; when it returns the gateway resyncs', async () => {
    const port = feed!.port
    await stop(feed)
    for (let i = 0; i < 5; i++) assert.equal(await status(r1.instanceId), 200)
    assert.equal(await status(r2.instanceId), 200)
    // While it was down: r2 was deleted and r3 created.
    feed = await spawnChild(FEED, { FEED_PORT: String(port), FEED_KEY: KEY, FEED_ROUTES: JSON.stringify([r1, r3]) })
    await waitFor('r3 after resync', async () => (await status(r3.instanceId)) === 200, 10_000)
    assert.equal(await status(r2.instanceId), 404)
    assert.equal(await status(r1.instanceId), 200)
  })
})
