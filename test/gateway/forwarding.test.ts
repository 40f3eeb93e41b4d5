import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import http from 'node:http'
import { Readable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { Agent, request } from 'undici'
import { route, startGateway, startUpstream } from './helpers.js'
import type { TestGateway, Upstream } from './helpers.js'

describe('gateway forwarding (path mode, real sockets)', () => {
  let app: Upstream
  let g: TestGateway
  const client = new Agent({ connections: 8 })
  const strip = route({ address: '', ownerId: 'alice', pathMode: 'strip' })
  const keep = route({ address: '', ownerId: 'alice', pathMode: 'keep', hostHeader: 'preserve' })
  let alice: string

  before(async () => {
    app = await startUpstream()
    g = await startGateway()
    g.hub.upsert({ ...strip, address: app.url })
    g.hub.upsert({ ...keep, address: app.url })
    alice = g.cookie('alice')
  })
  after(async () => {
    await client.close()
    await g.close()
    await app.close()
  })

  const get = (path: string, headers: Record<string, string> = {}) =>
    request(`${g.base}${path}`, { dispatcher: client, headers: { cookie: alice, ...headers } })

  test('GET in strip mode: prefix removed, forwarded header set, own cookie stripped, hop-by-hop dropped', async () => {
    // node:http, because undici will not send a Connection header naming other fields
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http
        .get(
          `${g.base}/s/${strip.instanceId}/echo?q=1`,
          {
            agent: false,
            headers: {
              cookie: `${alice}; other=yes`,
              connection: 'keep-alive, x-secret-hop',
              'x-secret-hop': '1',
              'x-forwarded-for': '6.6.6.6',
            },
          },
          resolve,
        )
        .on('error', reject)
    })
    assert.equal(res.statusCode, 200)
    let raw = ''
    for await (const c of res) raw += c
    const body = JSON.parse(raw) as { url: string; headers: Record<string, string> }
    assert.equal(body.url, '/echo?q=1')
    const h = body.headers
    assert.equal(h['x-forwarded-for'], '127.0.0.1') // the client's 6.6.6.6 is not trusted
    assert.equal(h['x-forwarded-proto'], 'http')
    assert.equal(h['x-forwarded-host'], `127.0.0.1:${g.port}`)
    assert.equal(h['x-forwarded-prefix'], `/s/${strip.instanceId}`)
    assert.equal(h['x-rstudio-root-path'], `/s/${strip.instanceId}`)
    assert.equal(h.host, `127.0.0.1:${app.port}`) // hostHeader: target (the seed's changeOrigin)
    assert.equal(h.cookie, 'other=yes')
    assert.equal(h['x-secret-hop'], undefined)
    // response hop-by-hop headers (and those named in Connection) do not reach the client
    assert.equal(res.headers['x-hop'], undefined)
    assert.notEqual(res.headers['keep-alive'], 'timeout=5')
  })

  test('GET in keep mode: prefix kept, Host preserved, no cookie header when only ours was sent', async () => {
    const res = await get(`/s/${keep.instanceId}/echo`)
    const body = (await res.body.json()) as { url: string; headers: Record<string, string> }
    assert.equal(body.url, `/s/${keep.instanceId}/echo`)
    assert.equal(body.headers.host, `127.0.0.1:${g.port}`)
    assert.equal(body.headers.cookie, undefined)
  })

  test('/s/{id} redirects to /s/{id}/ keeping the query', async () => {
    const res = await request(`${g.base}/s/${strip.instanceId}?a=1&b=2`, { dispatcher: client })
    assert.equal(res.statusCode, 302)
    assert.equal(res.headers.location, `/s/${strip.instanceId}/?a=1&b=2`)
    await res.body.dump()
  })

  test('20 MiB upload streams through with the same checksum', async () => {
    const data = app.big
    const sha = createHash('sha256').update(data).digest('hex')
    // chunked upload from a stream (no content-length)
    const body = Readable.from(
      (function* () {
        for (let o = 0; o < data.length; o += 1 << 20) yield data.subarray(o, o + (1 << 20))
      })(),
    )
    const res = await request(`${g.base}/s/${strip.instanceId}/upload`, {
      dispatcher: client,
      method: 'POST',
      headers: { cookie: alice },
      body,
    })
    assert.equal(res.statusCode, 200)
    assert.deepEqual(await res.body.json(), { sha, bytes: data.length })
    // and with a content-length
    const res2 = await request(`${g.base}/s/${strip.instanceId}/upload`, {
      dispatcher: client,
      method: 'POST',
      headers: { cookie: alice, 'content-length': String(data.length) },
      body: data,
    })
    assert.deepEqual(await res2.body.json(), { sha, bytes: data.length })
  })

  test('20 MiB chunked download streams through with the same checksum', async () => {
    const res = await get(`/s/${strip.instanceId}/big`)
    assert.equal(res.statusCode, 200)
    const h = createHash('sha256')
    let n = 0
    for await (const c of res.body) {
      h.update(c as Buffer)
      n += (c as Buffer).length
    }
    assert.equal(n, app.big.length)
    assert.equal(h.digest('hex'), app.bigSha)
  })

  test('chunked response arrives in parts', async () => {
    const res = await get(`/s/${strip.instanceId}/chunked`)
    assert.equal(res.headers['transfer-encoding'], 'chunked')
    assert.equal(await res.body.text(), 'part0;part1;part2;part3;part4;')
  })

  test('server-sent events stream through as they are sent', async () => {
    const res = await get(`/s/${strip.instanceId}/sse`, { accept: 'text/event-stream' })
    assert.equal(res.headers['content-type'], 'text/event-stream')
    const stamps: number[] = []
    let text = ''
    for await (const c of res.body) {
      stamps.push(Date.now())
      text += (c as Buffer).toString()
    }
    assert.equal(text, 'data: tick 0\n\ndata: tick 1\n\ndata: tick 2\n\n')
    assert.ok(stamps.length >= 2, 'events arrived separately, not buffered into one')
  })

  test('redirects: Location rewritten under the prefix in strip mode, untouched for relative', async () => {
    const a = await get(`/s/${strip.instanceId}/redirect-path`)
    assert.equal(a.headers.location, `/s/${strip.instanceId}/target?x=1`)
    const b = await get(`/s/${strip.instanceId}/redirect-upstream`)
    assert.equal(b.headers.location, `http://127.0.0.1:${g.port}/s/${strip.instanceId}/target`)
    const c = await get(`/s/${strip.instanceId}/redirect-relative`)
    assert.equal(c.headers.location, 'target')
    await Promise.all([a.body.dump(), b.body.dump(), c.body.dump()])
  })

  test('redirects in keep mode: absolute paths are left alone, upstream origin becomes ours', async () => {
    const a = await get(`/s/${keep.instanceId}/redirect-path`)
    assert.equal(a.headers.location, '/target?x=1')
    const b = await get(`/s/${keep.instanceId}/redirect-upstream`)
    assert.equal(b.headers.location, `http://127.0.0.1:${g.port}/target`)
    await Promise.all([a.body.dump(), b.body.dump()])
  })

  test('Set-Cookie paths go under the prefix in strip mode, stay in keep mode; the app cannot set our cookie', async () => {
    const a = await get(`/s/${strip.instanceId}/cookies`)
    assert.deepEqual(a.headers['set-cookie'], [
      `a=1; Path=/s/${strip.instanceId}/`,
      `b=2; Path=/s/${strip.instanceId}/sub; HttpOnly`,
      'c=3',
    ])
    const b = await get(`/s/${keep.instanceId}/cookies`)
    assert.deepEqual(b.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/sub; HttpOnly', 'c=3'])
    await Promise.all([a.body.dump(), b.body.dump()])
  })

  test('an app that dies mid-response aborts the client response; a dead app gives the 502 page', async () => {
    const res = await get(`/s/${strip.instanceId}/slow-then-fail`)
    await assert.rejects(res.body.text())
    const dead = route({ address: 'http://127.0.0.1:1', ownerId: 'alice' })
    g.hub.upsert(dead)
    const r502 = await get(`/s/${dead.instanceId}/`, { accept: 'text/html' })
    assert.equal(r502.statusCode, 502)
    assert.match(await r502.body.text(), /does not answer/)
    assert.doesNotMatch(g.logs(), /"stack"/)
  })

  test('a POST with a body to a dead app gets the 502 page; a client that goes away ends the upstream request', async () => {
    const dead = route({ address: 'http://127.0.0.1:1', ownerId: 'alice' })
    g.hub.upsert(dead)
    const r = await request(`${g.base}/s/${dead.instanceId}/upload`, {
      method: 'POST',
      dispatcher: client,
      headers: { cookie: alice, accept: 'text/html' },
      body: Buffer.alloc(256 * 1024, 1),
    })
    assert.equal(r.statusCode, 502)
    assert.match(await r.body.text(), /does not answer/)
    // A request the app never answers: the client gives up, and the gateway closes its upstream request too.
    const before = { ...app.hang }
    const ac = new AbortController()
    const pending = request(`${g.base}/s/${strip.instanceId}/hang`, {
      dispatcher: client,
      headers: { cookie: alice },
      signal: ac.signal,
    })
    const deadline = Date.now() + 5000
    while (app.hang.opened === before.opened && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10))
    assert.equal(app.hang.opened, before.opened + 1, 'the app saw the request')
    ac.abort()
    await assert.rejects(pending)
    while (app.hang.closed === before.closed && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10))
    assert.equal(app.hang.closed, before.closed + 1, 'the upstream request was closed')
  })

  test('an app slower than upstreamTimeoutMs gets the 504 page', async () => {
    const slow = await startGateway({ upstreamTimeoutMs: 300 })
    try {
      const r0 = route({ address: app.url, ownerId: 'alice' })
      slow.hub.upsert(r0)
      const t0 = Date.now()
      const r = await request(`${slow.base}/s/${r0.instanceId}/hang`, {
        headers: { cookie: slow.cookie('alice'), accept: 'text/html' },
      })
      assert.equal(r.statusCode, 504)
      await r.body.dump()
      assert.ok(Date.now() - t0 >= 250, 'not before the timeout')
    } finally {
      await slow.close()
    }
  })

  test('progress page while starting, then the app once ready', async () => {
    const r = route({
      address: null,
      ownerId: 'alice',
      state: 'queued',
      queuePosition: 3,
      progress: 0,
      progressMessage: 'waiting <for> a slot',
    })
    g.hub.upsert(r)
    const p1 = await get(`/s/${r.instanceId}/`, { accept: 'text/html' })
    const html = await p1.body.text()
    assert.equal(p1.statusCode, 503)
    assert.match(html, /http-equiv="refresh"/)
    assert.match(html, /Position in queue: <strong>3<\/strong>/)
    assert.match(html, /waiting &lt;for&gt; a slot/)
    g.hub.upsert({ ...r, state: 'starting', queuePosition: null, progress: 40 })
    const p2 = await get(`/s/${r.instanceId}/`, { accept: 'text/html' })
    assert.match(await p2.body.text(), /<progress max="100" value="40">/)
    g.hub.upsert({ ...r, state: 'ready', address: app.url, progress: 100 })
    const p3 = await get(`/s/${r.instanceId}/echo`)
    assert.equal(p3.statusCode, 200)
    await p3.body.dump()
  })

  test('unknown and ended sessions get the ended page; a non-session path without fallback gets 404', async () => {
    const unknown = route({ address: null })
    const a = await get(`/s/${unknown.instanceId}/`, { accept: 'text/html' })
    assert.equal(a.statusCode, 404)
    assert.match(await a.body.text(), /ended or does not exist/)
    const b = await get('/somewhere')
    assert.equal(b.statusCode, 404)
    await b.body.dump()
  })

  test("metrics count requests by the session's template and status class", async () => {
    const text = await g.registry.metrics()
    assert.match(text, /studiopool_gateway_requests_total\{template="demo",status_class="2xx"\} [1-9]/)
    assert.match(text, /studiopool_gateway_upstream_errors_total\{template="demo",code="ECONNREFUSED"\} [1-9]/)
  })
})
