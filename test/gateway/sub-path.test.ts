/**
 * Sub-path hosting (issue 17): `server.publicUrl: http://127.0.0.1:<port>/studiopool/` serves the API,
 * the dashboard, login and the gateway's session paths under `/studiopool/`, with the real binary,
 * the local provider and the demo app. Requests arrive with the prefix (a proxy that passes the path
 * through); outside it there is nothing but the root probes.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import WebSocket from 'ws'
import { StudiopoolClient } from '../../src/client/index.js'
import { api, DEMO_APP, killAll, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { freePort, waitFor } from '../helpers/wait.js'

const PREFIX = '/studiopool'
let dir = ''
let s: ServerProcess
let origin = ''
let base = ''

const demo = (name: string, pathMode: 'strip' | 'keep') => `
  ${name}:
    provider: local
    minFree: 1
    maxInstances: 3
    startTimeout: 20s
    pathMode: ${pathMode}
    healthPath: "${pathMode === 'keep' ? '{{basePath}}healthz' : '/healthz'}"
    local: { command: ${JSON.stringify([process.execPath, DEMO_APP, '--port', '{{port}}', '--base-path', pathMode === 'keep' ? '{{basePath}}' : '/'])}, stopGrace: 2000 }`

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sp-subpath-'))
  const port = await freePort()
  origin = `http://127.0.0.1:${port}`
  base = origin + PREFIX
  s = await spawnServer({
    cwd: dir,
    args: ['--port', String(port)],
    config: `
server: { dataDir: ./data, publicUrl: "${base}/" }
worker: { interval: 250ms }
dashboard: { login: dev }
templates:${demo('demo', 'strip')}${demo('kept', 'keep')}
`,
  })
})

after(async () => {
  await s?.kill('SIGKILL')
  killAll(join(dir, 'data'))
  rmSync(dir, { recursive: true, force: true })
})

/** Every root-relative URL in markup (href, src, action, data-events). */
function rootRelative(html: string): string[] {
  return [...html.matchAll(/\b(?:href|src|action|formaction|data-events)="(\/[^"]*)"/g)].map((m) => m[1]!)
}

function assertAllPrefixed(html: string, what: string): void {
  const links = rootRelative(html)
  assert.ok(links.length > 0, `${what} has links`)
  const bad = links.filter((l) => !l.startsWith(PREFIX + '/'))
  assert.deepEqual(bad, [], `${what}: every root-relative link is under ${PREFIX}/`)
}

async function launchSession(template: string, userId: string) {
  const grant = await api(base, s.adminKey!, 'POST', `${PREFIX}/api/commands`, {
    command: 'REQUEST_SESSION',
    payload: { userId, template },
  })
  assert.ok(grant.status === 200 || grant.status === 202, JSON.stringify(grant.body))
  const id: string = grant.body.instanceId ?? grant.body.instance?.id
  assert.ok(id, JSON.stringify(grant.body))
  const url: string = grant.body.url ?? grant.body.launchUrl
  assert.ok(url.startsWith(`${base}/s/${id}/?`), `the launch link is under the prefix: ${url}`)
  await waitFor(
    `${id} ready`,
    async () => {
      const r = await api(base, s.adminKey!, 'POST', `${PREFIX}/api/commands`, {
        command: 'GET_STATUS',
        payload: { instanceId: id, userId },
      })
      return r.body.instance?.state === 'ready'
    },
    30_000,
    100,
  )
  const res = await request(url)
  await res.body.dump()
  assert.equal(res.statusCode, 302)
  assert.equal(res.headers.location, `${PREFIX}/s/${id}/`)
  const set = ([] as string[]).concat(res.headers['set-cookie'] ?? [])
  assert.equal(set.length, 1)
  assert.match(set[0]!, new RegExp(`; Path=${PREFIX}/;`), 'the session cookie is scoped to the prefix')
  return { id, cookie: set[0]!.split(';')[0]! }
}

async function echo(url: string, cookie: string): Promise<string> {
  const ws = new WebSocket(url, { headers: { cookie, origin } })
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)))
    })
    const got = new Promise<string>((resolve) => ws.once('message', (d: Buffer) => resolve(d.toString())))
    ws.send('hello under a prefix')
    return await got
  } finally {
    ws.close()
  }
}

describe('sub-path hosting: server.publicUrl with a path', () => {
  test('the banner and the probes: under the prefix and at the root; nothing else outside it', async () => {
    assert.equal(s.url, base)
    for (const p of ['/healthz', `${PREFIX}/healthz`, `${PREFIX}/readyz`]) {
      const r = await request(origin + p)
      await r.body.dump()
      assert.equal(r.statusCode, 200, p)
    }
    for (const p of ['/', '/api/v1/instances', '/login', '/s/abc/', '/studiopoolx/']) {
      const r = await request(origin + p)
      const body = (await r.body.json()) as { error: { code: string; message: string } }
      assert.equal(r.statusCode, 404, p)
      assert.equal(body.error.code, 'NOT_FOUND')
      assert.match(body.error.message, /served under \/studiopool\//)
    }
    const bare = await request(origin + PREFIX)
    await bare.body.dump()
    assert.equal(bare.statusCode, 308)
    assert.equal(bare.headers.location, `${PREFIX}/`)
  })

  test('the API and its document under the prefix', async () => {
    const list = await api(base, s.adminKey!, 'GET', `${PREFIX}/api/v1/instances`)
    assert.equal(list.status, 200)
    // The typed client, given the public URL with its path, stays under it.
    const client = new StudiopoolClient({ url: `${base}/`, key: s.adminKey! })
    assert.ok(Array.isArray((await client.request<{ instances: unknown[] }>('GET', '/api/v1/instances')).instances))
    const docs = await request(`${base}/api/docs`)
    await docs.body.dump()
    assert.ok([200, 302].includes(docs.statusCode))
    if (docs.statusCode === 302) assert.ok(String(docs.headers.location).startsWith(`${PREFIX}/`))
    const doc = await request(`${base}/api/v1/openapi.json`)
    assert.equal(doc.statusCode, 200)
    const body = (await doc.body.json()) as { servers: { url: string }[] }
    assert.equal(body.servers[0]!.url, PREFIX, 'the operations are relative to the prefix')
  })

  test('REQUEST_SESSION → launch link under the prefix → the app over HTTP and a WebSocket (strip mode)', async () => {
    const { id, cookie } = await launchSession('demo', 'ada')
    const page = await request(`${base}/s/${id}/`, { headers: { cookie } })
    const html = await page.body.text()
    assert.equal(page.statusCode, 200)
    assert.match(html, /base path <code>\/<\/code>/, 'strip mode: the app sees its root')
    assert.equal(await echo(`ws://127.0.0.1:${new URL(base).port}${PREFIX}/s/${id}/ws`, cookie), 'hello under a prefix')
    const slashless = await request(`${base}/s/${id}`, { headers: { cookie } })
    await slashless.body.dump()
    assert.equal(slashless.headers.location, `${PREFIX}/s/${id}/`)
    const outside = await request(`${origin}/s/${id}/`, { headers: { cookie } })
    await outside.body.dump()
    assert.equal(outside.statusCode, 404, 'the session path without the prefix is not ours')
  })

  test('keep mode: the app sees the whole public path, prefix included', async () => {
    const { id, cookie } = await launchSession('kept', 'bob')
    const page = await request(`${base}/s/${id}/`, { headers: { cookie } })
    const html = await page.body.text()
    assert.equal(page.statusCode, 200)
    assert.match(html, new RegExp(`base path <code>${PREFIX}/s/${id}/</code>`))
    assert.equal(await echo(`ws://127.0.0.1:${new URL(base).port}${PREFIX}/s/${id}/ws`, cookie), 'hello under a prefix')
  })

  test('dashboard: dev login, redirects, cookies and every link under the prefix', async () => {
    const first = await request(`${base}/`, { headers: { accept: 'text/html' } })
    await first.body.dump()
    assert.equal(first.statusCode, 303)
    assert.equal(first.headers.location, `${PREFIX}/login?next=%2F`)
    const login = await request(`${base}/login`, { headers: { accept: 'text/html' } })
    const loginHtml = await login.body.text()
    assert.equal(login.statusCode, 200)
    assertAllPrefixed(loginHtml, 'the login page')
    const stateSet = ([] as string[]).concat(login.headers['set-cookie'] ?? [])
    assert.ok(stateSet.length > 0)
    for (const c of stateSet) assert.match(c, new RegExp(`; Path=${PREFIX}/`), `cookie under the prefix: ${c}`)
    const csrf = /name="csrf" value="([^"]+)"/.exec(loginHtml)![1]!
    const post = await request(`${base}/login`, {
      method: 'POST',
      headers: {
        cookie: stateSet.map((c) => c.split(';')[0]).join('; '),
        'content-type': 'application/x-www-form-urlencoded',
        origin,
      },
      body: new URLSearchParams({ csrf, user: 'carol', next: '/' }).toString(),
    })
    await post.body.dump()
    assert.equal(post.statusCode, 303)
    assert.equal(post.headers.location, `${PREFIX}/`)
    const session = ([] as string[])
      .concat(post.headers['set-cookie'] ?? [])
      .find((c) => c.startsWith('studiopool_session=') && !c.startsWith('studiopool_session=;'))
    assert.ok(session, 'the login sets the session cookie')
    assert.match(session, new RegExp(`; Path=${PREFIX}/;`))
    const home = await request(`${base}/`, { headers: { cookie: session.split(';')[0]!, accept: 'text/html' } })
    const homeHtml = await home.body.text()
    assert.equal(home.statusCode, 200)
    assertAllPrefixed(homeHtml, 'the dashboard')
    assert.match(homeHtml, new RegExp(`data-events="${PREFIX}/events"`))
    for (const asset of rootRelative(homeHtml).filter((l) => l.startsWith(`${PREFIX}/assets/`))) {
      const a = await request(origin + asset)
      await a.body.dump()
      assert.equal(a.statusCode, 200, asset)
    }
  })
})
