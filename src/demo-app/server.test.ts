import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, describe, it } from 'node:test'
import WebSocket from 'ws'
import { DEMO_APP_SCRIPT } from './index.js'

const children = new Set<ChildProcess>()

/** Starts the demo app on port 0 and resolves with its base URL once it listens (bounded). */
async function startApp(
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<{ child: ChildProcess; base: string }> {
  const child = spawn(process.execPath, [DEMO_APP_SCRIPT, '--port', '0', ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  children.add(child)
  const base = await new Promise<string>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`demo app did not start: ${out}`)), 10_000)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)
      if (m) {
        clearTimeout(timer)
        resolve(m[1]!)
      }
    })
    child.once('exit', (code) => reject(new Error(`demo app exited with ${code}: ${out}`)))
  })
  return { child, base }
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: string | null }> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode })
  return new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })))
}

after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
})

describe('demo session app', () => {
  it('serves its page, health and headers under / and under its base path', async () => {
    const { child, base } = await startApp(['--base-path', '/s/abc/', '--instance-id', 'abc'])
    for (const prefix of ['', '/s/abc']) {
      const health = await fetch(`${base}${prefix}/healthz`)
      assert.equal(health.status, 200)
      assert.equal(await health.text(), 'ok\n')
      const h = (await (await fetch(`${base}${prefix}/headers`, { headers: { 'x-test': 'yes' } })).json()) as {
        path: string
        headers: Record<string, string>
      }
      assert.equal(h.path, '/headers')
      assert.equal(h.headers['x-test'], 'yes')
    }
    const page = await fetch(`${base}/s/abc/`, { headers: { 'x-forwarded-user': 'alice<script>' } })
    assert.equal(page.status, 200)
    const html = await page.text()
    assert.ok(html.includes('alice&lt;script&gt;'), 'the user is shown, escaped')
    assert.ok(
      html.includes('Session owner: <strong id="owner">alice&lt;script&gt;</strong>'),
      'the owner from X-Forwarded-User',
    )
    const withGroups = await (
      await fetch(`${base}/`, { headers: { 'x-forwarded-user': 'bob', 'x-forwarded-groups': 'r-users,staff' } })
    ).text()
    assert.ok(withGroups.includes('<strong id="owner">bob</strong>, groups <span id="groups">r-users, staff</span>'))
    const anonymous = await (await fetch(`${base}/`)).text()
    assert.ok(anonymous.includes('(none: not behind the studiopool gateway)'))
    const owner = (await (await fetch(`${base}/headers`, { headers: { 'x-forwarded-user': 'bob' } })).json()) as {
      owner: { user: string; groups: string[] }
    }
    assert.deepEqual(owner.owner, { user: 'bob', groups: [] })
    assert.ok(html.includes('<code id="instance">abc</code>'))
    assert.ok(html.includes("new URL('ws', location.href)"), 'the page connects to ./ws')
    assert.equal((await fetch(`${base}/s/abc`)).status, 200, 'the base path without its slash is the root')
    assert.equal((await fetch(`${base}/nope`)).status, 404)
    child.kill('SIGTERM')
    assert.deepEqual(await exited(child), { code: 0, signal: null })
  })

  it('echoes WebSocket messages at ws, under either path', async () => {
    const { child, base } = await startApp(['--base-path', '/s/abc/'])
    for (const path of ['/ws', '/s/abc/ws']) {
      const ws = new WebSocket(base.replace('http', 'ws') + path)
      await new Promise((r, j) => ws.once('open', r).once('error', j))
      const got = new Promise<string>((r) => ws.once('message', (d) => r(d.toString())))
      ws.send(`hello ${path}`)
      assert.equal(await got, `hello ${path}`)
      ws.close()
    }
    const bad = new WebSocket(base.replace('http', 'ws') + '/elsewhere')
    await assert.rejects(new Promise((r, j) => bad.once('open', r).once('error', j)), /404/)
    child.kill('SIGTERM')
    await exited(child)
  })

  it('streams: /echo, /chunked, /sse; redirects and cookies for the gateway tests', async () => {
    const { child, base } = await startApp()
    // /echo answers the first bytes before the request body has ended.
    const first = await new Promise<string>((resolve, reject) => {
      const req = httpRequest(`${base}/echo`, { method: 'POST', headers: { 'content-type': 'text/plain' } }, (res) => {
        res.once('data', (d: Buffer) => {
          resolve(d.toString())
          req.end()
          res.resume()
        })
      })
      req.on('error', reject)
      req.write('part one')
    })
    assert.equal(first, 'part one')
    const chunked = await fetch(`${base}/chunked?n=3&interval=1`)
    assert.equal(chunked.headers.get('transfer-encoding'), 'chunked')
    assert.equal(await chunked.text(), 'chunk 0\nchunk 1\nchunk 2\n')
    const sse = await fetch(`${base}/sse?n=2&interval=10`)
    assert.equal(sse.headers.get('content-type'), 'text/event-stream')
    assert.equal((await sse.text()).match(/^data: /gm)?.length, 2)
    const loc = async (q: string) =>
      (await fetch(`${base}/redirect${q}`, { redirect: 'manual' })).headers.get('location')
    assert.equal(await loc(''), './')
    assert.equal(await loc('?to=/somewhere'), '/somewhere')
    assert.equal(await loc('?to=//evil.example'), './', 'no protocol-relative open redirect')
    assert.equal(await loc('?to=full'), `${base}/somewhere`, 'an absolute URL on the Host it was reached at')
    const cookie = await fetch(`${base}/cookie`)
    assert.ok(cookie.headers.getSetCookie().some((c) => c.startsWith('demo=1; Path=/;')))
    assert.equal((await fetch(`${base}/status/503`)).status, 503)
    child.kill('SIGTERM')
    await exited(child)
  })

  it('exits promptly on SIGTERM with open streams and sockets', async () => {
    const { child, base } = await startApp()
    const ws = new WebSocket(base.replace('http', 'ws') + '/ws')
    await new Promise((r, j) => ws.once('open', r).once('error', j))
    ws.on('error', () => {})
    const sse = await fetch(`${base}/sse?n=300`)
    sse.body?.cancel().catch(() => {})
    const t0 = Date.now()
    child.kill('SIGTERM')
    assert.deepEqual(await exited(child), { code: 0, signal: null })
    assert.ok(Date.now() - t0 < 1500, `exited in ${Date.now() - t0} ms`)
  })

  it('reports startup progress with its bearer token, then listens', async () => {
    const reports: { auth: string | undefined; body: { progress: number; message: string } }[] = []
    const collector: Server = createServer((req, res) => {
      let body = ''
      req.on('data', (d: Buffer) => (body += d.toString()))
      req.on('end', () => {
        reports.push({
          auth: req.headers.authorization,
          body: JSON.parse(body) as { progress: number; message: string },
        })
        res.end()
      })
    })
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r))
    try {
      const url = `http://127.0.0.1:${(collector.address() as AddressInfo).port}/api/v1/instances/x/progress`
      const { child, base } = await startApp(['--startup-delay-ms', '200'], {
        STUDIOPOOL_PROGRESS_URL: url,
        STUDIOPOOL_PROGRESS_TOKEN: 'tok',
      })
      assert.equal((await fetch(`${base}/healthz`)).status, 200)
      const deadline = Date.now() + 5000
      while (!reports.some((r) => r.body.progress === 100) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20))
      assert.deepEqual(
        reports.map((r) => r.body.progress),
        [0, 25, 50, 75, 100],
      )
      assert.ok(reports.every((r) => r.auth === 'Bearer tok'))
      child.kill('SIGTERM')
      await exited(child)
    } finally {
      await new Promise((r) => collector.close(r))
    }
  })

  it('starts even when nobody collects its progress', async () => {
    const { child, base } = await startApp(['--startup-delay-ms', '40'], {
      STUDIOPOOL_PROGRESS_URL: 'http://127.0.0.1:9/none',
      STUDIOPOOL_PROGRESS_TOKEN: 'tok',
    })
    assert.equal((await fetch(`${base}/healthz`)).status, 200)
    child.kill('SIGTERM')
    await exited(child)
  })
})
