/**
 * The warning banner's injection (docs/widget.md), as units and through a real gateway in front of
 * a real HTTP app on 127.0.0.1: each body encoding (identity, gzip, deflate, br) decoded and
 * injected; a streaming page gets the tag before the app has finished it; CSP variants widened
 * exactly; ETag/304, HEAD, Range, non-HTML, iframe loads and a template that did not opt in left
 * as they are (byte for byte); the reserved `.studiopool/` endpoints (status, keep with its
 * token and same-origin check), and that the banner's polling is not activity.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib'
import { request } from 'undici'
import type { SessionControls, SessionStopStatus } from '../../src/domain/pending-stop.js'
import { HtmlInjector, insertionPoint, SCAN_LIMIT } from '../../src/gateway/widget-inject.js'
import { widenCsp } from '../../src/gateway/widget-csp.js'
import { route, startGateway, type TestGateway } from './helpers.js'

const PAGE =
  '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>app</title></head><body><h1>app</h1></body></html>'
const SRC = 'http://h:1/s/x/.studiopool/'

describe('widget units', () => {
  test('insertion point: after <head …>, else <body …>, else <html …> at the end; never inside <header>', () => {
    assert.equal(insertionPoint('<html><head lang=x><title>', false), '<html><head lang=x>'.length)
    assert.equal(
      insertionPoint('<html><header>x</header><body class=a>', false),
      '<html><header>x</header><body class=a>'.length,
    )
    assert.equal(insertionPoint('<html><heade', false), -1, 'not yet known')
    assert.equal(insertionPoint('<html data-x="1"><p>hi', true), '<html data-x="1">'.length)
    assert.equal(insertionPoint('<p>a fragment</p>', true), -1)
  })

  test('the injector streams: the tag and what follows go out as soon as <head> is seen, split across chunks', async () => {
    const inj = new HtmlInjector('<script src="w.js"></script>')
    const out: string[] = []
    inj.on('data', (c: Buffer) => out.push(c.toString()))
    inj.write('<!doctype html><html><he')
    await new Promise((r) => setImmediate(r))
    assert.equal(out.join(''), '', 'held until the tag is complete')
    inj.write('ad><title>t')
    await new Promise((r) => setImmediate(r))
    assert.equal(out.join(''), '<!doctype html><html><head><script src="w.js"></script><title>t')
    inj.end('</title></head><body></body></html>')
    await new Promise((r) => inj.on('end', r))
    assert.ok(out.join('').endsWith('</head><body></body></html>'))
    assert.equal(inj.injected, true)
  })

  test('a page without any of the tags in its first 64 KiB passes unchanged', async () => {
    const inj = new HtmlInjector('<script></script>')
    const chunks: Buffer[] = []
    inj.on('data', (c: Buffer) => chunks.push(c))
    const body = Buffer.alloc(SCAN_LIMIT + 10, 'a')
    inj.end(Buffer.concat([body, Buffer.from('<head>')]))
    await new Promise((r) => inj.on('end', r))
    assert.equal(Buffer.concat(chunks).toString(), body.toString() + '<head>')
    assert.equal(inj.injected, false)
  })

  test("CSP: default-src 'none' with script-src 'self' gets the path for scripts and a connect-src", () => {
    assert.equal(
      widenCsp("default-src 'none'; script-src 'self'", { source: SRC, nonce: 'N' }),
      `default-src 'none'; script-src 'self' ${SRC}; connect-src ${SRC}`,
    )
  })

  test("CSP: nonces and 'strict-dynamic' get the gateway's nonce; 'unsafe-inline' alone never does", () => {
    assert.equal(
      widenCsp("script-src 'nonce-abc' 'strict-dynamic'; object-src 'none'; base-uri 'none'", {
        source: SRC,
        nonce: 'N',
      }),
      `script-src 'nonce-abc' 'strict-dynamic' ${SRC} 'nonce-N'; object-src 'none'; base-uri 'none'`,
    )
    assert.equal(
      widenCsp("script-src 'self' 'unsafe-inline'; connect-src 'self'", { source: SRC, nonce: 'N' }),
      `script-src 'self' 'unsafe-inline' ${SRC}; connect-src 'self' ${SRC}`,
    )
    assert.equal(
      widenCsp("default-src 'self'; script-src-elem 'sha256-AAAA'; script-src 'none'", { source: SRC, nonce: 'N' }),
      `default-src 'self'; script-src-elem 'sha256-AAAA' ${SRC} 'nonce-N'; script-src ${SRC}; connect-src 'self' ${SRC}`,
    )
    assert.equal(widenCsp('frame-ancestors https://lms', { source: SRC, nonce: 'N' }), 'frame-ancestors https://lms')
  })
})

/** A fixed status, and every call the gateway made. */
function fakeControls(warn = true): SessionControls & { calls: string[] } {
  const calls: string[] = []
  const status = (id: string): SessionStopStatus => ({
    instanceId: id,
    state: 'ready',
    pendingStop: { reason: 'idle', at: 2_000_000 },
    now: 1_900_000,
    warnBeforeMs: 300_000,
    warn,
    canKeepWorking: true,
    canSuspend: false,
  })
  return {
    calls,
    status: async (id) => (calls.push(`status ${id}`), status(id)),
    keepWorking: async (id, user) => (calls.push(`keep ${id} ${user}`), status(id)),
    stop: async (id, user) => void calls.push(`stop ${id} ${user}`),
    suspend: async (id, user) => void calls.push(`suspend ${id} ${user}`),
  }
}

describe('widget through the gateway', () => {
  let app: http.Server
  let appUrl = ''
  let gw: TestGateway
  const controls = fakeControls()
  let release: () => void = () => {}
  const ids = { on: '', off: '' }

  before(async () => {
    app = http.createServer((req, res) => {
      const u = new URL(req.url!, 'http://x')
      const csp = u.searchParams.get('csp')
      const base: Record<string, string> = {
        'content-type': 'text/html; charset=utf-8',
        etag: '"v1"',
        'accept-ranges': 'bytes',
      }
      if (csp) base['content-security-policy'] = csp
      if (u.pathname === '/page') {
        if (req.headers['if-none-match'] === '"v1"')
          return void res.writeHead(304, { etag: '"v1"', ...(csp ? { 'content-security-policy': csp } : {}) }).end()
        const enc = u.searchParams.get('enc') ?? 'identity'
        const raw = Buffer.from(PAGE)
        const body =
          enc === 'gzip'
            ? gzipSync(raw)
            : enc === 'deflate'
              ? deflateSync(raw)
              : enc === 'br'
                ? brotliCompressSync(raw)
                : raw
        res.writeHead(200, {
          ...base,
          ...(enc === 'identity' ? {} : { 'content-encoding': enc }),
          'content-length': body.length,
        })
        return void res.end(req.method === 'HEAD' ? undefined : body)
      }
      if (u.pathname === '/stream') {
        res.writeHead(200, { 'content-type': 'text/html' })
        res.write('<!doctype html><html><head><title>slow</title>')
        release = () => res.end('</head><body>done</body></html>')
        return
      }
      if (u.pathname === '/range') {
        res.writeHead(206, { 'content-type': 'text/html', 'content-range': `bytes 0-9/${PAGE.length}` })
        return void res.end(PAGE.slice(0, 10))
      }
      if (u.pathname === '/zstd') {
        res.writeHead(200, { 'content-type': 'text/html', 'content-encoding': 'zstd' })
        return void res.end('not really zstd <head>')
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"head":"<head>"}')
    })
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
    appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}`
    gw = await startGateway({}, undefined, { controls, widget: { warnBeforeMs: 300_000, pollMs: 5000 } })
    const on = route({ address: appUrl, injectWidget: true })
    const off = route({ address: appUrl })
    ids.on = on.instanceId
    ids.off = off.instanceId
    gw.hub.reset([on, off])
  })

  after(async () => {
    await gw.close()
    app.closeAllConnections()
    await new Promise((r) => app.close(r))
  })

  const get = (
    id: string,
    path: string,
    headers: Record<string, string> = {},
    method: 'GET' | 'HEAD' | 'POST' = 'GET',
  ) => request(`${gw.base}/s/${id}${path}`, { method, headers: { cookie: gw.cookie('alice'), ...headers } })
  const tag = (id: string) => `<script src="/s/${id}/.studiopool/widget.js" nonce="`

  for (const enc of ['identity', 'gzip', 'deflate', 'br']) {
    test(`a ${enc} page is decoded and gets the tag after <head>; sent identity, length and ranges dropped, ETag suffixed`, async () => {
      const r = await get(ids.on, `/page?enc=${enc}`, { 'accept-encoding': 'gzip, deflate, br' })
      const text = await r.body.text()
      assert.equal(r.statusCode, 200)
      assert.ok(text.startsWith('<!doctype html><html lang="en"><head>' + tag(ids.on)), text.slice(0, 200))
      assert.ok(text.endsWith('<title>app</title></head><body><h1>app</h1></body></html>'))
      assert.equal(r.headers['content-encoding'], undefined)
      assert.equal(r.headers['content-length'], undefined)
      assert.equal(r.headers['accept-ranges'], undefined)
      assert.equal(r.headers.etag, '"v1-spwidget"')
    })
  }

  test('the suffixed ETag revalidates: the app sees its own tag and its 304 goes back with ours', async () => {
    const r = await get(ids.on, '/page', { 'if-none-match': '"v1-spwidget"' })
    await r.body.text()
    assert.equal(r.statusCode, 304)
    assert.equal(r.headers.etag, '"v1-spwidget"')
  })

  test('HEAD gets the fields a GET would (no body); a streaming page shows the tag before the app finishes', async () => {
    const h = await get(ids.on, '/page', {}, 'HEAD')
    await h.body.text()
    assert.equal(h.headers.etag, '"v1-spwidget"')
    assert.equal(h.headers['content-length'], undefined)

    const r = await get(ids.on, '/stream')
    const it = r.body[Symbol.asyncIterator]()
    const first = (await it.next()).value as Buffer
    assert.ok(first.toString().includes(tag(ids.on)), 'the first bytes arrive, injected, while the app still writes')
    release()
    let rest = ''
    for (let n = await it.next(); !n.done; n = await it.next()) rest += (n.value as Buffer).toString()
    assert.ok((first.toString() + rest).endsWith('<body>done</body></html>'))
  })

  test('a strict CSP is widened for the banner, and the tag carries the nonce it adds', async () => {
    const csp = "default-src 'none'; script-src 'nonce-r4nd0m' 'strict-dynamic'"
    const r = await get(ids.on, `/page?csp=${encodeURIComponent(csp)}`)
    const text = await r.body.text()
    const nonce = /nonce="([^"]+)"/.exec(text)![1]!
    const src = `${gw.base}/s/${ids.on}/.studiopool/`
    assert.equal(
      r.headers['content-security-policy'],
      `default-src 'none'; script-src 'nonce-r4nd0m' 'strict-dynamic' ${src} 'nonce-${nonce}'; connect-src ${src}`,
    )
  })

  test('left alone: 206, an unknown encoding, JSON, an iframe or fetch load; and byte for byte for a template that did not opt in', async () => {
    const range = await get(ids.on, '/range', { range: 'bytes=0-9' })
    assert.equal(await range.body.text(), PAGE.slice(0, 10))
    assert.equal(await (await get(ids.on, '/zstd')).body.text(), 'not really zstd <head>')
    assert.equal(await (await get(ids.on, '/data.json')).body.text(), '{"head":"<head>"}')
    for (const dest of ['iframe', 'empty']) {
      const r = await get(ids.on, '/page', { 'sec-fetch-dest': dest })
      assert.equal(await r.body.text(), PAGE, dest)
      assert.equal(r.headers.etag, '"v1"')
    }
    for (const enc of ['identity', 'gzip', 'br']) {
      const direct = await request(`${appUrl}/page?enc=${enc}&csp=default-src%20%27none%27`)
      const want = Buffer.from(await direct.body.arrayBuffer())
      const r = await get(ids.off, `/page?enc=${enc}&csp=default-src%20%27none%27`)
      assert.deepEqual(Buffer.from(await r.body.arrayBuffer()), want, `${enc}: the same bytes`)
      for (const h of ['content-encoding', 'content-length', 'etag', 'content-security-policy', 'accept-ranges'])
        assert.equal(r.headers[h], direct.headers[h], h)
    }
    // …and its .studiopool/ path is the app's, not the gateway's.
    assert.equal(await (await get(ids.off, '/.studiopool/status')).body.text(), '{"head":"<head>"}')
  })

  test('status and the script are served by the gateway, never count as activity; keep needs the token and the same origin', async () => {
    await gw.gw.flushActivity()
    const before = gw.activity.flat().filter((a) => a.id === ids.on).length
    const js = await get(ids.on, '/.studiopool/widget.js')
    assert.equal(js.headers['content-type'], 'text/javascript; charset=utf-8')
    assert.match(await js.body.text(), /Keep working/)
    const st = await get(ids.on, '/.studiopool/status')
    const s = (await st.body.json()) as SessionStopStatus & { token: string; pollMs: number }
    assert.deepEqual([s.pendingStop, s.warn, s.pollMs], [{ reason: 'idle', at: 2_000_000 }, true, 5000])
    await gw.gw.flushActivity()
    assert.equal(gw.activity.flat().filter((a) => a.id === ids.on).length, before, 'polling is not activity')

    const keep = (headers: Record<string, string>) => get(ids.on, '/.studiopool/keep', headers, 'POST')
    const noToken = await keep({ origin: gw.base })
    assert.equal(noToken.statusCode, 403)
    assert.equal(((await noToken.body.json()) as { error: { code: string } }).error.code, 'FORBIDDEN')
    const otherSite = await keep({ origin: 'https://evil.example', 'x-studiopool-token': s.token })
    assert.equal(otherSite.statusCode, 403)
    await otherSite.body.text()
    const crossSite = await keep({ 'sec-fetch-site': 'cross-site', 'x-studiopool-token': s.token })
    assert.equal(crossSite.statusCode, 403)
    await crossSite.body.text()
    assert.ok(!controls.calls.some((c) => c.startsWith('keep')), 'nothing was done for a refused request')
    const ok = await keep({ origin: gw.base, 'sec-fetch-site': 'same-origin', 'x-studiopool-token': s.token })
    assert.equal(ok.statusCode, 200)
    await ok.body.text()
    assert.deepEqual(
      controls.calls.filter((c) => c.startsWith('keep')),
      [`keep ${ids.on} alice`],
    )
    // Another user's cookie never reaches the desk: the owner check comes first.
    const bob = await request(`${gw.base}/s/${ids.on}/.studiopool/status`, { headers: { cookie: gw.cookie('bob') } })
    assert.equal(bob.statusCode, 403)
    await bob.body.text()
  })
})
