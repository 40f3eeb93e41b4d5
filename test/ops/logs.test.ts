/**
 * Issue 17 "Logs", through the real binary: JSON lines only when stdout is not a terminal (banners
 * included), a human form on a terminal; an access-log line per API and gateway request with its
 * request id; lifecycle events as log lines; the bootstrap admin key in a 0600 file, never printed;
 * no secret as a CLI help default.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { request } from 'undici'
import { api, BIN, spawnServer, type ServerProcess } from '../helpers/server-process.js'
import { waitFor } from '../helpers/wait.js'

const dirs: string[] = []
const procs: ServerProcess[] = []
after(async () => {
  for (const p of procs) await p.kill()
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

// The fake provider's instances all report this address: a small app that answers, so they become ready.
const app = createServer((_req, res) => res.end('ok'))
const appUrl = new Promise<string>((resolve) =>
  app.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(app.address() as AddressInfo).port}`)),
)
after(() => app.close())

const CONFIG = async (data: string, extra = '') =>
  `server: { dataDir: ${JSON.stringify(data)}${extra} }\nworker: { interval: 1s }\ntemplates:\n  demo:\n    provider: fake\n    minFree: 1\n    fake: { address: "${await appUrl}" }\n`

interface Line {
  level: number
  msg: string
  [k: string]: unknown
}
/** Every line of the server's output as JSON (fails on any line that is not). */
function jsonLines(out: string): Line[] {
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      try {
        return JSON.parse(l) as Line
      } catch {
        assert.fail(`not a JSON line in the server's output: ${JSON.stringify(l)}`)
      }
    })
}

describe('logs when stdout is not a terminal', () => {
  let s: ServerProcess
  let data: string

  test('every line is JSON, the banners too; the admin key is only in a 0600 file the banner names', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sp-logs-'))
    dirs.push(dir)
    data = join(dir, 'data')
    s = await spawnServer({ cwd: dir, config: await CONFIG(data), env: { STUDIOPOOL_LOG_LEVEL: 'info' } })
    procs.push(s)
    const lines = jsonLines(s.output())
    const banner = lines.find((l) => /listening on http/.test(l.msg))
    assert.ok(banner, 'the listening banner is a JSON line')
    const keyLine = lines.find((l) => /first admin key written to/.test(l.msg))
    assert.ok(keyLine, 'the banner says where the admin key is')
    assert.equal(keyLine.keyFile, join(data, 'bootstrap-admin.key'))
    assert.equal(statSync(keyLine.keyFile as string).mode & 0o777, 0o600)
    const key = readFileSync(keyLine.keyFile as string, 'utf8').trim()
    assert.match(key, /^sp_[a-z2-7]{12}_[A-Za-z0-9_-]{43}$/)
    assert.ok(!s.output().includes(key), 'the key never appears in the output')
    assert.equal((await api(s.url, key, 'GET', '/api/v1/keys')).status, 200, 'the key in the file works')
  })

  test('an access-log line per request with its request id: a sane X-Request-Id is kept and returned, else one is made', async () => {
    const given = await request(`${s.url}/api/v1/templates`, {
      headers: { authorization: `Bearer ${s.adminKey}`, 'x-request-id': 'trace-4711' },
    })
    await given.body.text()
    assert.equal(given.headers['x-request-id'], 'trace-4711')
    const insane = await request(`${s.url}/healthz`, { headers: { 'x-request-id': 'x'.repeat(300) } })
    await insane.body.text()
    const made = String(insane.headers['x-request-id'])
    assert.match(made, /^[0-9a-f-]{36}$/)
    // A gateway request (no session cookie) and a launch token in the query, which is never logged.
    const gw = await request(`${s.url}/s/nosuchinstance0000000/?token=secret-launch-token`)
    await gw.body.text()
    const gwId = String(gw.headers['x-request-id'])

    const access = await waitFor('three access-log lines', () => {
      const ls = jsonLines(s.output()).filter((l) => l.component === 'access')
      const want = ['trace-4711', made, gwId].map((id) => ls.find((l) => l.reqId === id))
      return want.every(Boolean) ? (want as Line[]) : undefined
    })
    assert.deepEqual(
      access.map((l) => [l.method, l.path, l.status, l.level]),
      [
        ['GET', '/api/v1/templates', 200, 30],
        ['GET', '/healthz', 200, 30],
        ['GET', '/s/nosuchinstance0000000/?token=redacted', gw.statusCode, 30],
      ],
    )
    assert.ok(access.every((l) => typeof l.ms === 'number'))
    assert.ok(!s.output().includes('secret-launch-token'))
  })

  test('lifecycle events are log lines: assigned warm, released with its reason, key created and revoked, refusals', async () => {
    const key = s.adminKey!
    const warm = await waitFor(
      'a warm instance ready (its lifecycle line)',
      () => jsonLines(s.output()).find((l) => l.component === 'lifecycle' && l.event === 'ready' && !l.userId),
      30_000,
    )
    assert.equal(typeof warm.secondsToReady, 'number')
    const grant = await waitFor(
      'a warm grant',
      async () => {
        const r = await api<{ instanceId: string; outcome: string }>(s.url, key, 'POST', '/api/v1/sessions', {
          userId: 'alice',
        })
        return r.status < 300 && r.body.outcome === 'warm' ? r.body : undefined
      },
      30_000,
    )
    assert.equal((await api(s.url, key, 'DELETE', `/api/v1/instances/${grant.instanceId}`)).status, 200)
    const created = await api<{ id: string }>(s.url, key, 'POST', '/api/v1/keys', { name: 'ci', role: 'requester' })
    assert.ok(created.status < 300)
    assert.equal((await api(s.url, key, 'DELETE', `/api/v1/keys/${created.body.id}`)).status, 200)
    assert.equal((await api(s.url, 'sp_wrong', 'GET', '/api/v1/instances')).status, 401)

    const events = await waitFor('the lifecycle lines', () => {
      const ls = jsonLines(s.output()).filter((l) => l.component === 'lifecycle')
      const find = (event: string, f: (l: Line) => boolean = () => true) => ls.find((l) => l.event === event && f(l))
      const want = {
        assigned: find('assigned', (l) => l.instanceId === grant.instanceId),
        released: find('released', (l) => l.instanceId === grant.instanceId),
        created: find('key-created', (l) => l.name === 'ci'),
        revoked: find('key-revoked', (l) => l.id === created.body.id),
        refused: find('refused', (l) => l.code === 'UNAUTHORIZED'),
      }
      return Object.values(want).every(Boolean) ? (want as Record<keyof typeof want, Line>) : undefined
    })
    assert.equal(grant.instanceId, warm.instanceId, 'the ready warm instance was the one assigned')
    assert.equal(events.assigned.kind, 'warm')
    assert.equal(events.assigned.secondsToReady, 0)
    assert.equal(events.assigned.userId, 'alice')
    assert.equal(typeof events.released.reason, 'string')
    assert.equal(events.created.role, 'requester')
    assert.equal(events.refused.status, 401)
    assert.ok(typeof events.refused.reqId === 'string', 'a refusal carries the request id')
  })
})

test('on a terminal the log is human text (no JSON), and accessLog: off writes no access lines', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sp-logs-tty-'))
  dirs.push(dir)
  // A real pseudo-terminal for stdout: script(1) runs the server under one.
  const cfg = join(dir, 'studiopool.yaml')
  const { writeFileSync } = await import('node:fs')
  writeFileSync(cfg, await CONFIG(join(dir, 'data'), ', accessLog: off'))
  const out = join(dir, 'out.txt')
  const s = spawnSync(
    'script',
    [
      '-qefc',
      `${process.execPath} ${BIN} serve --config ${cfg} --port 0 & pid=$!; for i in $(seq 1 300); do grep -q 'listening[ ]on http' ${out}.log 2>/dev/null && break; sleep 0.1; done; kill -TERM $pid; wait $pid`,
      `${out}.log`,
    ],
    { cwd: dir, encoding: 'utf8', timeout: 60_000, env: { PATH: process.env.PATH ?? '', HOME: dir } },
  )
  const text = readFileSync(`${out}.log`, 'utf8').replaceAll('\r', '')
  const lines = text.split('\n').filter((l) => /^\d\d:\d\d:\d\d /.test(l))
  assert.ok(lines.length >= 2, `human lines expected:\n${text}\n${s.stderr}`)
  assert.ok(
    lines.some((l) => /^\d\d:\d\d:\d\d INFO +studiopool listening on http/.test(l)),
    text,
  )
  assert.doesNotMatch(text, /^\{"level"/m, 'no JSON line on a terminal')
  assert.doesNotMatch(text, /component=access/, 'accessLog: off')
})

test('no secret as a CLI help default: `request --help` never prints STUDIOPOOL_KEY', () => {
  const secret = 'sp_abcdefghijkl_secretsecretsecretsecretsecretsecretsecre'
  for (const args of [
    ['request', '--help'],
    ['keys', 'create', '--help'],
    ['homes', 'list', '--help'],
  ]) {
    const r = spawnSync(process.execPath, [BIN, ...args], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '', STUDIOPOOL_KEY: secret },
    })
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /--key <key>/)
    assert.ok(!r.stdout.includes(secret), `${args.join(' ')} printed the key`)
  }
})
