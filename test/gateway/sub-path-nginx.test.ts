/**
 * Sub-path hosting behind the documented proxy (issue 17): nginx forwards only `location /studiopool/`
 * to studiopool, passing the path through (README "Sub-path hosting"); the API, a session with a
 * WebSocket and the dev login all work through it, and nothing outside the prefix reaches studiopool.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import WebSocket from 'ws'
import { api, DEMO_APP, killAll, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { freePort, waitFor } from '../helpers/wait.js'

const NGINX = '/usr/sbin/nginx'
const PREFIX = '/studiopool'
let dir = ''
let s: ServerProcess | undefined
let nginx: ChildProcess | undefined
let origin = ''
let base = ''

function nginxConf(d: string, port: number, upstream: number): string {
  // As root, workers would run as nobody and could not use the temp paths under our 0700 directory.
  const user = process.getuid?.() === 0 ? 'user root;\n' : ''
  return `${user}worker_processes 1;
daemon off;
pid ${d}/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${d}/body;
  proxy_temp_path ${d}/proxy;
  fastcgi_temp_path ${d}/fastcgi;
  uwsgi_temp_path ${d}/uwsgi;
  scgi_temp_path ${d}/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:${port};
    location = /nginx-alive { return 204; }
    location / { return 418; }
    location /studiopool/ {
      proxy_pass http://127.0.0.1:${upstream};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_read_timeout 3600s;
    }
  }
}
`
}

before(async () => {
  if (!existsSync(NGINX)) throw new Error(`${NGINX} is missing: apt-get install nginx-light (listed in .ci/run)`)
  dir = mkdtempSync(join(tmpdir(), 'sp-subpath-nginx-'))
  const [port, upstream] = [await freePort(), await freePort()]
  origin = `http://127.0.0.1:${port}`
  base = origin + PREFIX
  const d = join(dir, 'nginx')
  mkdirSync(d)
  writeFileSync(join(d, 'nginx.conf'), nginxConf(d, port, upstream))
  const child = spawn(NGINX, ['-p', d, '-c', join(d, 'nginx.conf'), '-e', join(d, 'error.log')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  nginx = child
  let out = ''
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()))
  await waitFor(
    'nginx to listen',
    async () => {
      if (child.exitCode !== null) throw new Error(`nginx exited: ${out}`)
      const res = await request(`${origin}/nginx-alive`).catch(() => undefined)
      await res?.body.dump()
      return res?.statusCode === 204
    },
    10_000,
    50,
  )
  s = await spawnServer({
    cwd: dir,
    args: ['--port', String(upstream)],
    config: `
server: { dataDir: ./data, publicUrl: "${base}/" }
worker: { interval: 250ms }
dashboard: { login: dev }
templates:
  demo:
    provider: local
    minFree: 1
    maxInstances: 2
    startTimeout: 20s
    healthPath: /healthz
    local: { command: ${JSON.stringify([process.execPath, DEMO_APP, '--port', '{{port}}'])}, stopGrace: 2000 }
`,
  })
})

after(async () => {
  await s?.kill('SIGKILL')
  if (nginx && nginx.exitCode === null) {
    const n = nginx
    const exited = new Promise((r) => n.once('exit', r))
    process.kill(n.pid!, 'SIGTERM') // the master; it stops its worker
    await exited
  }
  killAll(join(dir, 'data'))
  rmSync(dir, { recursive: true, force: true })
})

describe('sub-path hosting behind nginx (location /studiopool/, path passed through)', () => {
  test('probes and the API through the proxy; outside the prefix nginx answers, not studiopool', async () => {
    for (const p of ['/healthz', '/readyz']) {
      const r = await request(base + p)
      await r.body.dump()
      assert.equal(r.statusCode, 200, p)
    }
    const outside = await request(`${origin}/api/v1/instances`)
    await outside.body.dump()
    assert.equal(outside.statusCode, 418, 'nginx keeps the rest of the site')
    const list = await api(base, s!.adminKey!, 'GET', `${PREFIX}/api/v1/instances`)
    assert.equal(list.status, 200)
  })

  test('REQUEST_SESSION → the launch link through nginx → the app and a WebSocket echo', async () => {
    const grant = await api(base, s!.adminKey!, 'POST', `${PREFIX}/api/commands`, {
      command: 'REQUEST_SESSION',
      payload: { userId: 'ada', template: 'demo' },
    })
    const id = grant.body.instanceId as string
    const url = grant.body.url as string
    assert.ok(url.startsWith(`${base}/s/${id}/?`), url)
    await waitFor(
      `${id} ready`,
      async () => {
        const r = await api(base, s!.adminKey!, 'POST', `${PREFIX}/api/commands`, {
          command: 'GET_STATUS',
          payload: { instanceId: id, userId: 'ada' },
        })
        return r.body.instance?.state === 'ready'
      },
      30_000,
      100,
    )
    const launch = await request(url)
    await launch.body.dump()
    assert.equal(launch.statusCode, 302)
    assert.equal(launch.headers.location, `${PREFIX}/s/${id}/`)
    const cookie = String(([] as string[]).concat(launch.headers['set-cookie'] ?? [])[0]).split(';')[0]!
    const page = await request(`${origin}${launch.headers.location}`, { headers: { cookie } })
    assert.equal(page.statusCode, 200)
    assert.match(await page.body.text(), /WebSocket echo/)
    const ws = new WebSocket(`ws://${new URL(origin).host}${PREFIX}/s/${id}/ws`, { headers: { cookie, origin } })
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve())
        ws.once('error', reject)
      })
      const got = new Promise<string>((resolve) => ws.once('message', (d: Buffer) => resolve(d.toString())))
      ws.send('through nginx')
      assert.equal(await got, 'through nginx')
    } finally {
      ws.close()
    }
  })

  test('the dev login through nginx lands on the dashboard under the prefix', async () => {
    const login = await request(`${base}/login`, { headers: { accept: 'text/html' } })
    const html = await login.body.text()
    assert.equal(login.statusCode, 200)
    const csrf = /name="csrf" value="([^"]+)"/.exec(html)![1]!
    const state = ([] as string[]).concat(login.headers['set-cookie'] ?? []).map((c) => c.split(';')[0])
    const post = await request(`${base}/login`, {
      method: 'POST',
      headers: { cookie: state.join('; '), 'content-type': 'application/x-www-form-urlencoded', origin },
      body: new URLSearchParams({ csrf, user: 'bob', next: '/' }).toString(),
    })
    await post.body.dump()
    assert.equal(post.statusCode, 303)
    assert.equal(post.headers.location, `${PREFIX}/`)
    const session = ([] as string[])
      .concat(post.headers['set-cookie'] ?? [])
      .find((c) => /^studiopool_session=[^;]/.test(c))!
    const home = await request(`${base}/`, { headers: { cookie: session.split(';')[0]!, accept: 'text/html' } })
    assert.equal(home.statusCode, 200)
    assert.match(await home.body.text(), new RegExp(`action="${PREFIX}/launch"`))
  })
})
