#!/usr/bin/env node
// studiopool demo session app: what the default template runs, and the gateway tests' upstream.
// Plain JavaScript ESM on purpose: the local provider starts it with `process.execPath server.mjs`,
// without tsx. Only `node:http` and `ws`.
//
// Settings: PORT / --port, BASE_PATH / --base-path, HOST / --host (default 127.0.0.1),
// STUDIOPOOL_INSTANCE_ID / --instance-id, --startup-delay-ms / STARTUP_DELAY_MS,
// STUDIOPOOL_PROGRESS_URL + STUDIOPOOL_PROGRESS_TOKEN (progress reports during the startup delay).
//
// Paths are served both under `/` (the gateway stripped the prefix) and under BASE_PATH (the
// gateway kept it): a request path that starts with BASE_PATH is read relative to it.
import { createServer } from 'node:http'
import { WebSocketServer } from 'ws'

function parseArgs(argv) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) continue
    const eq = a.indexOf('=')
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1)
    else if (i + 1 < argv.length) out[a.slice(2)] = argv[++i]
  }
  return out
}

const args = parseArgs(process.argv.slice(2))
const port = Number(args.port ?? process.env.PORT ?? 8000)
const host = args.host ?? process.env.HOST ?? '127.0.0.1'
let basePath = args['base-path'] ?? process.env.BASE_PATH ?? '/'
if (!basePath.startsWith('/')) basePath = '/' + basePath
if (!basePath.endsWith('/')) basePath += '/'
const instanceId = args['instance-id'] ?? process.env.STUDIOPOOL_INSTANCE_ID ?? 'demo'
const startupDelayMs = Math.max(0, Number(args['startup-delay-ms'] ?? process.env.STARTUP_DELAY_MS ?? 0) || 0)
const progressUrl = process.env.STUDIOPOOL_PROGRESS_URL
const progressToken = process.env.STUDIOPOOL_PROGRESS_TOKEN

if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`demo-app: invalid port ${args.port ?? process.env.PORT}`)
  process.exit(2)
}

let pageViews = 0
let requests = 0
const startedAt = new Date()

function log(msg) {
  process.stdout.write(`${new Date().toISOString()} demo-app[${instanceId}] ${msg}\n`)
}

/** Path relative to the app's root, always starting with '/'. */
function relativePath(pathname) {
  if (basePath !== '/') {
    if (pathname.startsWith(basePath)) return '/' + pathname.slice(basePath.length)
    if (pathname === basePath.slice(0, -1)) return '/'
  }
  return pathname
}

function escapeHtml(s) {
  return String(s).replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c],
  )
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(body)
}

/**
 * The session's owner as the gateway vouches for it: X-Forwarded-User (and X-Forwarded-Groups when
 * the login knows them). The gateway removes any such header a browser sends, so this is the owner
 * even when the user tries to be someone else (issue 8).
 */
function ownerOf(req) {
  const user = req.headers['x-forwarded-user']
  const groups = req.headers['x-forwarded-groups']
  return {
    user: typeof user === 'string' && user ? user : null,
    groups: typeof groups === 'string' && groups ? groups.split(',') : [],
  }
}

function page(req) {
  pageViews++
  const owner = ownerOf(req)
  const user = owner.user ?? '(anonymous)'
  const rows = Object.entries(req.headers)
    .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(Array.isArray(v) ? v.join(', ') : v)}</td></tr>`)
    .join('')
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>studiopool demo session ${escapeHtml(instanceId)}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1d2733;background:#f7f8fa}
h1{font-size:1.4rem}.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:1rem 1.25rem;margin:1rem 0}
table{border-collapse:collapse;font-size:.85rem;width:100%}th,td{text-align:left;padding:.2rem .5rem;border-bottom:1px solid #eef1f4;vertical-align:top}
th{white-space:nowrap;color:#5a6675}td{word-break:break-all}code{background:#eef1f4;padding:0 .25rem;border-radius:3px}
#log{font-family:monospace;font-size:.85rem;min-height:3rem;white-space:pre-wrap}
</style></head><body>
<h1>Hello, <span id="user">${escapeHtml(user)}</span></h1>
<div class="card">
<p>Session owner: <strong id="owner">${escapeHtml(owner.user ?? '(none: not behind the studiopool gateway)')}</strong>${owner.groups.length ? `, groups <span id="groups">${escapeHtml(owner.groups.join(', '))}</span>` : ''}.
The gateway sets <code>X-Forwarded-User</code> for the owner and removes any identity header a browser sends.</p>
</div>
<div class="card">
<p>This is a studiopool demo session. Instance <code id="instance">${escapeHtml(instanceId)}</code>,
base path <code>${escapeHtml(basePath)}</code>, started ${escapeHtml(startedAt.toISOString())}.</p>
<p>Page views: <strong id="counter">${pageViews}</strong>.
<a href="./">Reload</a> · <a href="./headers">headers as JSON</a> · <a href="./sse?n=5">events</a></p>
</div>
<div class="card"><h2>WebSocket echo</h2>
<form id="f"><input id="msg" autocomplete="off" placeholder="type and press enter"> <button>Send</button></form>
<div id="log">(needs JavaScript)</div></div>
<div class="card"><h2>Request headers</h2><table>${rows}</table></div>
<script>
(function () {
  var log = document.getElementById('log'); log.textContent = 'connecting…';
  var url = new URL('ws', location.href); url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  var ws = new WebSocket(url);
  ws.onopen = function () { log.textContent = 'connected\\n' };
  ws.onmessage = function (e) { log.textContent += '← ' + e.data + '\\n' };
  ws.onclose = function () { log.textContent += 'closed\\n' };
  document.getElementById('f').onsubmit = function (e) {
    e.preventDefault(); var m = document.getElementById('msg');
    if (ws.readyState === 1 && m.value) { ws.send(m.value); log.textContent += '→ ' + m.value + '\\n'; m.value = '' }
  };
})();
</script>
</body></html>
`
}

function clampInt(value, min, max, dflt) {
  const n = Number.parseInt(value ?? '', 10)
  return Number.isFinite(n) ? Math.min(max, Math.max(min, n)) : dflt
}

const timers = new Set()
function later(ms, fn) {
  const t = setTimeout(() => {
    timers.delete(t)
    fn()
  }, ms)
  timers.add(t)
  return t
}

function handle(req, res) {
  requests++
  const url = new URL(req.url ?? '/', 'http://x')
  const path = relativePath(url.pathname)
  const q = url.searchParams

  if (path === '/healthz') return send(res, 200, 'text/plain', 'ok\n')
  if (path === '/' || path === '/index.html') return send(res, 200, 'text/html; charset=utf-8', page(req))
  if (path === '/headers') {
    return send(
      res,
      200,
      'application/json',
      JSON.stringify({ method: req.method, url: req.url, path, headers: req.headers, instanceId, owner: ownerOf(req) }),
    )
  }
  if (path === '/counter') return send(res, 200, 'application/json', JSON.stringify({ pageViews, requests }))
  if (path === '/echo') {
    // Streams the body back as it arrives (no buffering), for the gateway's streaming tests.
    res.writeHead(200, {
      'content-type': req.headers['content-type'] ?? 'application/octet-stream',
      'cache-control': 'no-store',
    })
    req.pipe(res)
    return
  }
  if (path === '/chunked') {
    const n = clampInt(q.get('n'), 1, 100, 5)
    const interval = clampInt(q.get('interval'), 0, 10_000, 50)
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' })
    let i = 0
    const tick = () => {
      if (res.destroyed) return
      res.write(`chunk ${i}\n`)
      if (++i >= n) return res.end()
      later(interval, tick)
    }
    tick()
    return
  }
  if (path === '/sse') {
    const n = clampInt(q.get('n'), 1, 300, 10)
    const interval = clampInt(q.get('interval'), 10, 60_000, 1000)
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
    res.flushHeaders()
    let i = 0
    const tick = () => {
      if (res.destroyed) return
      res.write(`id: ${i}\ndata: ${JSON.stringify({ n: i, at: Date.now() })}\n\n`)
      if (++i >= n) return res.end()
      later(interval, tick)
    }
    tick()
    return
  }
  if (path === '/redirect') {
    // `./` (relative), an absolute path such as `/somewhere`, or `full` (an absolute URL on the Host
    // we were reached at): the gateway must keep each of them under the session's prefix.
    const to = q.get('to') ?? './'
    let location = './'
    if (to === 'full') location = `http://${req.headers.host ?? `${host}:${port}`}/somewhere`
    else if (to.startsWith('/') && !to.startsWith('//')) location = to
    else if (to.startsWith('./')) location = to
    return send(res, 302, 'text/plain', `redirecting to ${location}\n`, { location })
  }
  if (path === '/cookie') {
    return send(res, 200, 'text/plain', 'cookie set\n', {
      'set-cookie': ['demo=1; Path=/; HttpOnly; SameSite=Lax', 'demo2=2; Path=/deep/; Max-Age=60'],
    })
  }
  if (path === '/delay') {
    const ms = clampInt(q.get('ms'), 0, 300_000, 1000)
    later(ms, () => {
      if (!res.destroyed) send(res, 200, 'text/plain', `waited ${ms} ms\n`)
    })
    return
  }
  if (path.startsWith('/status/')) {
    const code = clampInt(path.slice('/status/'.length), 200, 599, 200)
    return send(res, code, 'text/plain', `status ${code}\n`)
  }
  if (path === '/progress-demo') {
    void reportProgress(clampInt(q.get('p'), 0, 100, 50), q.get('message') ?? 'demo progress')
    return send(res, 202, 'text/plain', 'reported\n')
  }
  return send(res, 404, 'text/plain', `not found: ${path}\n`)
}

async function reportProgress(progress, message) {
  if (!progressUrl) return
  try {
    const headers = { 'content-type': 'application/json' }
    if (progressToken) headers.authorization = `Bearer ${progressToken}`
    const res = await fetch(progressUrl, {
      method: 'POST',
      headers,
      body: JSON.stringify({ progress, message }),
      signal: AbortSignal.timeout(2000),
    })
    await res.arrayBuffer()
  } catch {
    // Progress is a nicety; the app starts whether or not anybody listens.
  }
}

const server = createServer(handle)
server.requestTimeout = 0 // long-polls and streams are the point of this app
server.keepAliveTimeout = 75_000

const wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 })
server.on('upgrade', (req, socket, head) => {
  const path = relativePath(new URL(req.url ?? '/', 'http://x').pathname)
  if (path !== '/ws') {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
    return
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
    ws.on('error', () => ws.terminate())
  })
})

let stopping = false
function shutdown(signal) {
  if (stopping) return
  stopping = true
  log(`${signal}: shutting down`)
  for (const t of timers) clearTimeout(t)
  for (const ws of wss.clients) ws.terminate()
  server.close(() => process.exit(0))
  server.closeAllConnections?.()
  setTimeout(() => process.exit(0), 1000).unref()
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))

async function main() {
  if (startupDelayMs > 0) {
    const steps = 4
    for (let i = 0; i < steps && !stopping; i++) {
      await reportProgress(Math.round((i * 100) / steps), `starting (${i + 1}/${steps})`)
      await new Promise((r) => later(startupDelayMs / steps, r))
    }
  }
  if (stopping) return
  server.listen(port, host, () => {
    const addr = server.address()
    log(`listening on http://${host}:${typeof addr === 'object' && addr ? addr.port : port}${basePath}`)
    void reportProgress(100, 'app started')
  })
}
server.on('error', (err) => {
  console.error(`demo-app: ${err.message}`)
  process.exit(1)
})
void main()
