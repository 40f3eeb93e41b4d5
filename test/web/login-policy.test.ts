/**
 * Logins that cannot be borrowed (issue 8): dev login only on a plain-http loopback public URL with
 * no trusted proxy and no provider whose sessions reach loopback; the trusted-header login only from
 * proxy addresses sessions cannot use. Otherwise the server falls back to `off`, says why at start,
 * on the login page and in POST /login's answer (LOGIN_DISABLED). Real server, real sockets.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, describe, test } from 'node:test'
import pino from 'pino'
import { Agent, fetch as undiciFetch } from 'undici'
import { loadConfig } from '../../src/config/load.js'
import { start, type Running } from '../../src/main.js'
import { decideLogin } from '../../src/web/login-policy.js'
import { fetchLogin } from './helpers.js'

interface Started {
  readonly running: Running
  readonly url: string
  logs(): string
  close(): Promise<void>
}

const open: Started[] = []
after(async () => {
  for (const s of open.splice(0)) await s.close()
})

/** The real server with a fake-provider template, its log lines captured. */
async function serve(yaml: string): Promise<Started> {
  const dir = mkdtempSync(join(tmpdir(), 'sp-login-'))
  const lines: string[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString())
      cb()
    },
  })
  const config = loadConfig({
    text: `${yaml}\ntemplates:\n  demo: { provider: fake, minFree: 0 }\n`,
    env: {},
    cwd: dir,
    overrides: { port: 0, dataDir: dir, host: '127.0.0.1' },
  })
  const running = await start({ config, log: pino({ level: 'info' }, stream), onBootstrapKey: () => {} })
  const s: Started = {
    running,
    url: `http://127.0.0.1:${running.address!.port}`,
    logs: () => lines.join(''),
    async close() {
      await running.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
  open.push(s)
  return s
}

/** A throwaway certificate for 127.0.0.1 (openssl); undefined where openssl is missing. */
function selfSigned(): { key: Buffer; cert: Buffer } | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'sp-tls-'))
  try {
    const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')]
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    )
    return { key: readFileSync(key), cert: readFileSync(cert) }
  } catch {
    return undefined
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * A TLS-terminating reverse proxy on loopback in front of the server, as in docs/gateway.md's
 * nginx/Caddy setups: every client, wherever it is, reaches studiopool from 127.0.0.1. Plain HTTP
 * where openssl is missing (the decision does not depend on the proxy's own TLS).
 */
async function startProxy(): Promise<{ port: number; base: string; target(port: number): void }> {
  let targetPort = 0
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const up = httpRequest(
      {
        host: '127.0.0.1',
        port: targetPort,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https' },
      },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers)
        r.pipe(res)
      },
    )
    up.on('error', () => res.destroy())
    req.pipe(up)
  }
  const tls = selfSigned()
  const server = tls ? createTlsServer(tls, handler) : createServer(handler)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  after(() => new Promise<void>((r) => server.close(() => r())))
  const port = (server.address() as AddressInfo).port
  return { port, base: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, target: (p) => (targetPort = p) }
}

/** A client that accepts the proxy's throwaway certificate. */
const insecure = new Agent({ connect: { rejectUnauthorized: false } })
after(() => insecure.close())
const fetch = (url: string, init: Parameters<typeof undiciFetch>[1] = {}) =>
  undiciFetch(url, { dispatcher: insecure, ...init })

/** The dev login form's POST, as a remote browser (or script) would send it. */
async function postLogin(base: string, user: string, accept = 'application/json') {
  const page = await fetch(`${base}/login`)
  const html = await page.text()
  const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1] ?? 'none'
  const state =
    page.headers
      .getSetCookie()
      .find((c) => c.includes('_login='))
      ?.split(';')[0] ?? ''
  return fetch(`${base}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: state, 'content-type': 'application/x-www-form-urlencoded', origin: base, accept },
    body: new URLSearchParams({ csrf, user, next: '/admin' }),
  })
}

describe('dev login is refused where it could be borrowed', () => {
  test('a remote client behind a loopback TLS proxy (publicUrl https, trustProxy loopback) cannot use dev login, and the start warns', async (t) => {
    const proxy = await startProxy()
    const s = await serve(`server:\n  publicUrl: https://127.0.0.1:${proxy.port}\n  trustProxy: [loopback]\n`)
    proxy.target(s.running.address!.port)
    const via = proxy.base
    t.diagnostic(`through ${via.startsWith('https') ? 'a TLS' : 'a plain-HTTP (no openssl here)'} proxy`)
    assert.match(
      s.logs(),
      /DASHBOARD LOGIN IS OFF: dashboard.login is \\"dev\\", but server.publicUrl is https:\/\/127.0.0.1:\d+, not plain http on a loopback address/,
    )
    assert.match(s.logs(), /To sign users in: use dashboard.login: oidc, or header behind a login proxy/)

    const page = await fetch(`${via}/login`)
    assert.equal(page.status, 403)
    const html = await page.text()
    assert.match(html, /Sign-in is turned off/)
    assert.match(html, /<code>dashboard.login: dev<\/code>, but server.publicUrl is https:/)
    assert.match(html, /LOGIN_DISABLED/)
    assert.equal(page.headers.getSetCookie().length, 0)

    const post = await postLogin(via, 'admin')
    assert.equal(post.status, 403)
    assert.deepEqual(Object.keys((await post.json()) as object), ['error'])
    const again = await postLogin(via, 'admin')
    assert.equal(((await again.json()) as { error: { code: string } }).error.code, 'LOGIN_DISABLED')
    assert.equal(again.headers.getSetCookie().length, 0, 'no cookie')
    const browser = await postLogin(via, 'admin', 'text/html')
    assert.equal(browser.status, 403)
    assert.match(await browser.text(), /Sign-in is turned off/)
    const admin = await fetch(`${via}/admin`, { redirect: 'manual' })
    assert.equal(admin.status, 403)
    assert.match(await admin.text(), /Sign-in is turned off/)
  })

  test('a trusted proxy address that sessions can connect from is warned about at start', async () => {
    const s = await serve(
      'server:\n  trustProxy: [loopback, 10.213.0.9]\nproviders:\n  fake:\n    isolation: { sessionsReachLoopback: true, sessionNetworks: [10.213.0.0/16] }\n',
    )
    assert.match(
      s.logs(),
      /server.trustProxy trusts loopback, and sessions of the fake provider can connect from loopback: they can set the X-Forwarded-For\/-Proto\/-Host the gateway believes/,
    )
    assert.match(s.logs(), /server.trustProxy \(10.213.0.9\) lies within 10.213.0.0\/16/)
    const quiet = await serve(
      'server:\n  trustProxy: [192.0.2.1]\nproviders:\n  fake:\n    isolation: { sessionsReachLoopback: true, sessionNetworks: [10.213.0.0/16] }\n',
    )
    assert.doesNotMatch(quiet.logs(), /server.trustProxy (trusts|\()/)
  })

  test('an http loopback public URL with a trusted proxy is refused too', async () => {
    const s = await serve('server:\n  trustProxy: [127.0.0.1]\n')
    assert.match(
      s.logs(),
      /server.trustProxy is set: behind a proxy on this machine every client looks like loopback, so anyone could sign in under any name \(server.trustProxy: 127.0.0.1\)/,
    )
    const post = await postLogin(s.url, 'admin')
    assert.equal(post.status, 403)
    assert.equal(((await post.json()) as { error: { code: string } }).error.code, 'LOGIN_DISABLED')
  })

  test('a provider reporting sessionsReachLoopback disables dev login; allowDevLoginFromSessions turns it back on, loudly', async () => {
    const s = await serve('providers:\n  fake:\n    isolation: { isolated: false, sessionsReachLoopback: true }\n')
    assert.match(
      s.logs(),
      /DASHBOARD LOGIN IS OFF: .*sessions of the fake provider can connect to this server from loopback/,
    )
    assert.match(s.logs(), /dashboard.allowDevLoginFromSessions: true/)
    const post = await postLogin(s.url, 'bob')
    assert.equal(post.status, 403)
    assert.equal(((await post.json()) as { error: { code: string } }).error.code, 'LOGIN_DISABLED')
    await assert.rejects(fetchLogin(s.url, 'bob'), /no login form \(status 403\)/)

    const allowed = await serve(
      'dashboard:\n  allowDevLoginFromSessions: true\nproviders:\n  fake:\n    isolation: { sessionsReachLoopback: true }\n',
    )
    assert.match(allowed.logs(), /dev login is on although sessions can reach this server from loopback/)
    assert.match(await fetchLogin(allowed.url, 'bob'), /^studiopool_session=/)

    // Control: the same server without the report offers dev login, and says nothing.
    const plain = await serve('')
    assert.ok(!/LOGIN IS OFF|dev login is on although/.test(plain.logs()))
    assert.match(await fetchLogin(plain.url, 'bob'), /^studiopool_session=/)
  })
})

describe('trusted-header login only from proxies sessions cannot be', () => {
  const header = (proxies: string) => `dashboard:\n  login: header\n  header:\n    trustedProxies: ${proxies}\n`
  const signIn = (base: string) =>
    fetch(`${base}/login`, { redirect: 'manual', headers: { 'x-forwarded-user': 'bob' } })

  test('a loopback proxy while sessions reach loopback, or a proxy inside a session network, is refused at start', async () => {
    const loop = await serve(
      `${header('[loopback]')}providers:\n  fake:\n    isolation: { sessionsReachLoopback: true }\n`,
    )
    assert.match(
      loop.logs(),
      /DASHBOARD LOGIN IS OFF: dashboard.login is \\"header\\", but dashboard.header.trustedProxies trusts loopback, and sessions of the fake provider can connect from loopback/,
    )
    const r = await signIn(loop.url)
    assert.equal(r.status, 403)
    assert.equal(r.headers.getSetCookie().length, 0)
    assert.match(await r.text(), /Sign-in is turned off/)

    const net = await serve(
      `${header('[10.213.4.7, 127.0.0.1]')}providers:\n  fake:\n    isolation: { sessionNetworks: [10.213.0.0/16] }\n`,
    )
    assert.match(
      net.logs(),
      /trustedProxies lies within a network sessions of the fake provider connect from, .* \(trustedProxies 10.213.4.7 within 10.213.0.0\/16\)/,
    )
    const page = await signIn(net.url)
    assert.equal(page.status, 403)
    assert.ok(!(await page.text()).includes('10.213'), 'internal addresses stay in the log, off the public page')
  })

  test('control: the same proxy with no such report signs in', async () => {
    const s = await serve(
      `${header('[loopback]')}providers:\n  fake:\n    isolation: { sessionNetworks: [10.213.0.0/16] }\n`,
    )
    const r = await signIn(s.url)
    assert.equal(r.status, 303)
    assert.match(r.headers.getSetCookie().join(), /studiopool_session=/)
  })
})

describe('decideLogin (the rules, one by one)', () => {
  const base = {
    server: { publicUrl: 'http://127.0.0.1:8080', trustProxy: [] as string[] },
    dashboard: { login: 'dev' as const, allowDevLoginFromSessions: false, header: null },
  }
  const cfg = (over: { publicUrl?: string; trustProxy?: string[] } = {}) =>
    ({ ...base, server: { ...base.server, ...over } }) as unknown as Parameters<typeof decideLogin>[0]

  test('dev', () => {
    assert.equal(decideLogin(cfg(), []).effective, 'dev')
    assert.equal(decideLogin(cfg({ publicUrl: 'http://localhost:8080' }), []).effective, 'dev')
    assert.equal(decideLogin(cfg({ publicUrl: 'http://[::1]:8080' }), []).effective, 'dev')
    for (const publicUrl of ['https://127.0.0.1:8443', 'http://10.0.0.5:8080', 'http://sessions.example.org'])
      assert.equal(decideLogin(cfg({ publicUrl }), []).effective, 'off', publicUrl)
    assert.equal(decideLogin(cfg({ trustProxy: ['10.0.0.1'] }), []).effective, 'off')
    assert.equal(
      decideLogin(cfg(), [{ provider: 'local', sessionsReachLoopback: true, sessionNetworks: [] }]).effective,
      'off',
    )
    assert.equal(
      decideLogin(cfg(), [{ provider: 'docker', sessionsReachLoopback: false, sessionNetworks: ['172.17.0.0/16'] }])
        .effective,
      'dev',
    )
  })

  test('header', () => {
    const h = (trustedProxies: string[]) =>
      ({
        ...base,
        dashboard: {
          ...base.dashboard,
          login: 'header',
          header: { userHeader: 'x-forwarded-user', groupsHeader: 'x-forwarded-groups', trustedProxies },
        },
      }) as unknown as Parameters<typeof decideLogin>[0]
    const reach = [{ provider: 'p', sessionsReachLoopback: true, sessionNetworks: ['10.213.0.0/16', 'fd00:5::/32'] }]
    assert.equal(decideLogin(h(['127.0.0.1']), reach).effective, 'off', 'a loopback address')
    assert.equal(decideLogin(h(['127.0.0.0/8']), reach).effective, 'off', 'a loopback range')
    assert.equal(decideLogin(h(['10.0.0.0/8']), reach).effective, 'off', 'a range holding the session network')
    assert.equal(decideLogin(h(['fd00:5:1::9']), reach).effective, 'off', 'IPv6 inside')
    assert.equal(decideLogin(h(['10.214.0.1', 'fd00:6::1']), reach).effective, 'header', 'outside')
    assert.equal(decideLogin(h(['127.0.0.1']), []).effective, 'header', 'no report')
  })
})

describe('the admin dashboard says when sessions are not isolated', () => {
  test('a banner names the provider and what it cannot isolate; none when everything is isolated', async () => {
    const admin = 'dashboard:\n  admins: [ada]\n  allowDevLoginFromSessions: true\n'
    const open = await serve(
      `${admin}providers:\n  fake:\n    isolation: { isolated: false, sessionsReachLoopback: true, notes: ['sessions run as the server account'] }\n`,
    )
    const page = await fetch(`${open.url}/admin`, { headers: { cookie: await fetchLogin(open.url, 'ada') } })
    assert.equal(page.status, 200)
    const html = await page.text()
    assert.match(html, /<h2 id="h-iso">Sessions are not isolated<\/h2>/)
    assert.match(html, /<strong>fake<\/strong>: sessions run as the server account/)
    const ready = (await (await fetch(`${open.url}/readyz`)).json()) as {
      isolation: { provider: string; isolated: boolean; notes?: string[] }[]
    }
    assert.deepEqual(ready.isolation, [
      { provider: 'fake', isolated: false, notes: ['sessions run as the server account'] },
    ])

    const closed = await serve(
      `${admin}providers:\n  fake:\n    isolation: { isolated: true, sessionsReachLoopback: false, notes: ['isolated'] }\n`,
    )
    const quiet = await fetch(`${closed.url}/admin`, { headers: { cookie: await fetchLogin(closed.url, 'ada') } })
    assert.equal(quiet.status, 200)
    assert.doesNotMatch(await quiet.text(), /Sessions are not isolated/)
    const calm = (await (await fetch(`${closed.url}/readyz`)).json()) as { isolation: unknown }
    assert.deepEqual(calm.isolation, [{ provider: 'fake', isolated: true }])
  })
})
