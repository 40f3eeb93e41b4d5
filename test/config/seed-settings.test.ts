/**
 * Issue 9, item 6: the seed's settings as the seed meant them. MAX_INSTANCES caps the
 * environment-built template too; the EC2 progress URL comes from what instances can reach, and a
 * server whose ec2 template would get a loopback callback URL refuses to start (a real process, exit 2).
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { instanceCallbackBase, isLoopbackUrl, loadConfig } from '../../src/config/load.js'
import { BIN } from '../helpers/server-process.js'

const dir = mkdtempSync(join(tmpdir(), 'sp-seed-'))
after(() => rmSync(dir, { recursive: true, force: true }))
const fromEnv = (env: Record<string, string>) => loadConfig({ env, cwd: dir })
const SEED_EC2 = {
  IMAGE_ID: 'ami-0130bec6e5047f596',
  IMAGE_TYPE: 't2.micro',
  REGION: 'eu-central-1',
  SECURITY_GROUP: 'sg-1234aa12a123ab123',
}

describe('the seed environment, no config file', () => {
  test('MAX_INSTANCES=50 caps the pool and the environment-built template (demo and EC2 RStudio), not 10', () => {
    for (const env of [{ MAX_INSTANCES: '50' }, { ...SEED_EC2, MAX_INSTANCES: '50' }]) {
      const c = fromEnv(env)
      assert.equal(c.pool.maxInstances, 50)
      assert.equal(c.templates.length, 1)
      assert.equal(c.templates[0]!.maxInstances, 50, `${c.templates[0]!.name} is capped by MAX_INSTANCES`)
    }
  })

  test('with a file, MAX_INSTANCES stays the pool-wide cap and the templates keep theirs', () => {
    const c = loadConfig({
      text: 'templates:\n  a: { provider: fake, maxInstances: 7 }\n',
      env: { MAX_INSTANCES: '50' },
      cwd: dir,
    })
    assert.equal(c.pool.maxInstances, 50)
    assert.equal(c.templates[0]!.maxInstances, 7)
  })

  test('the progress callback base: server.instanceCallbackUrl, else SERVICE_URL, else publicUrl; loopback detection', () => {
    assert.deepEqual(instanceCallbackBase(fromEnv({ ...SEED_EC2, SERVICE_URL: 'http://10.1.2.3:8081/' })), {
      url: 'http://10.1.2.3:8081',
      setting: 'SERVICE_URL (split.serviceUrl)',
    })
    const explicit = fromEnv({
      ...SEED_EC2,
      SERVICE_URL: 'http://10.1.2.3:8081',
      STUDIOPOOL_INSTANCE_CALLBACK_URL: 'https://pool.internal.example',
    })
    assert.equal(instanceCallbackBase(explicit).url, 'https://pool.internal.example')
    assert.match(instanceCallbackBase(explicit).setting, /server\.instanceCallbackUrl/)
    const bare = fromEnv({ ...SEED_EC2, PORT: '8081' })
    assert.equal(instanceCallbackBase(bare).url, 'http://127.0.0.1:8081')
    assert.match(instanceCallbackBase(bare).setting, /server\.publicUrl/)
    for (const u of [
      'http://127.0.0.1:8080',
      'http://localhost',
      'http://[::1]:1',
      'http://0.0.0.0:80',
      'http://app.localhost',
    ])
      assert.ok(isLoopbackUrl(u), u)
    for (const u of ['http://10.0.0.1', 'https://pool.example.org', 'http://[fd00::1]:8080'])
      assert.ok(!isLoopbackUrl(u), u)
    const bad = (() => {
      try {
        loadConfig({ text: 'server: { instanceCallbackUrl: "not a url" }\n', env: {}, cwd: dir })
      } catch (err) {
        return err as Error
      }
    })()
    assert.match(bad?.message ?? '', /\/server\/instanceCallbackUrl/)
  })
})

describe('studiopool serve with the seed variables only', () => {
  test('refuses to start an ec2 template whose progress URL would be loopback: exit 2, naming the setting', async () => {
    const cwd = mkdtempSync(join(dir, 'serve-'))
    const child = spawn(process.execPath, [BIN, 'serve', '--port', '0'], {
      cwd,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: cwd,
        STUDIOPOOL_LOG_LEVEL: 'silent',
        STUDIOPOOL_DATA_DIR: join(cwd, 'data'),
        ...SEED_EC2,
        KEY_NAME: 'LambdaInstance',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
    clearTimeout(timer)
    assert.equal(code, 2, out)
    assert.match(out, /server\.instanceCallbackUrl/)
    assert.match(out, /template "rstudio" runs on ec2 instances/)
    assert.match(out, /http:\/\/127\.0\.0\.1:\d+ \(from server\.publicUrl/)
    assert.doesNotMatch(out, /listening on/)
  })
})
