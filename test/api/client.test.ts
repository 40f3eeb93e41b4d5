/**
 * The typed client (`studiopool/client`): the README's example runs as written (its import pointed
 * at the sources, as the package's export points at dist/) against a real server, follows a cold
 * start to ready and gets a typed error with the stable code; typed errors for a bad key and an
 * unreachable server. SQLite (the client does not see the store).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { StudiopoolClient, StudiopoolError } from '../../src/client/index.js'
import { startAppStub, startServer, type TestServer } from './helpers.js'

const KEY = 'client-requester-key-0123456789'
const ROOT = new URL('../../', import.meta.url).pathname

function readmeExample(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const m = /<!-- client-example -->\n```ts\n([\s\S]*?)```\n<!-- \/client-example -->/.exec(readme)
  assert.ok(m, 'the README has the client example')
  return m[1]!
}

describe('the typed client', () => {
  let app: Awaited<ReturnType<typeof startAppStub>>
  let s: TestServer
  let dir: string

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sp-client-'))
    app = await startAppStub()
    s = await startServer(
      'sqlite',
      `worker: { interval: 1h }
auth:
  keys:
    - { name: portal, role: requester, key: ${KEY} }
templates:
  demo:
    provider: fake
    fake: { address: ${JSON.stringify(app.url)}, startDelayMs: 200 }
`,
    )
  })
  after(async () => {
    await s?.close()
    await app?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  test("the README's example runs and prints what it says", async () => {
    const code = readmeExample().replace("'studiopool/client'", JSON.stringify(join(ROOT, 'src/client/index.ts')))
    const file = join(dir, 'example.mts')
    writeFileSync(file, code)
    const child = spawn(process.execPath, ['--import', 'tsx', file], {
      env: { ...process.env, STUDIOPOOL_URL: s.url, STUDIOPOOL_KEY: KEY },
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (c) => (out += String(c)))
    child.stderr.on('data', (c) => (err += String(c)))
    const exit = await new Promise<number | null>((r) => child.on('close', r))
    assert.equal(exit, 0, err)
    const lines = out.trim().split('\n')
    assert.equal(lines[0], 'starting', 'a cold start is accepted (202)')
    assert.match(lines[1]!, /^ready: ready, open http:\/\/127\.0\.0\.1:\d+\/.+/)
    assert.equal(lines[2], '404 NOT_FOUND')
    assert.equal(lines[3], 'ada has 1 open assignment(s)', 'the iterator walked her history')
  })

  test('typed errors: a bad key (401), a bad request (400 with details), an unreachable server', async () => {
    const bad = new StudiopoolClient({ url: s.url, key: 'not-a-real-key-0123456789' })
    const e1 = await bad.listTemplates().catch((e: unknown) => e)
    assert.ok(e1 instanceof StudiopoolError)
    assert.equal(e1.status, 401)
    assert.equal(e1.code, 'UNAUTHORIZED')
    const good = new StudiopoolClient({ url: s.url, key: KEY })
    const e2 = await good.requestSession({ userId: '' }).catch((e: unknown) => e)
    assert.ok(e2 instanceof StudiopoolError)
    assert.equal(e2.status, 400)
    assert.equal(e2.code, 'INVALID_REQUEST')
    const gone = new StudiopoolClient({ url: 'http://127.0.0.1:1', key: KEY, timeoutMs: 2000 })
    const e3 = await gone.listTemplates().catch((e: unknown) => e)
    assert.ok(e3 instanceof StudiopoolError)
    assert.equal(e3.code, 'UNREACHABLE')
  })
})
