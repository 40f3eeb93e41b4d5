/**
 * Configuration loading (src/config/load.ts): every error listed with its path, durations, secrets,
 * the seed's environment variables, renamed keys.
 */
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, loadConfig, type LoadOptions } from '../../src/config/load.js'

const dir = mkdtempSync(join(tmpdir(), 'sp-config-'))
after(() => rmSync(dir, { recursive: true, force: true }))

const load = (text: string | undefined, env: Record<string, string> = {}, extra: Partial<LoadOptions> = {}) =>
  loadConfig({ text, env, cwd: dir, ...extra })

function problems(text: string | undefined, env: Record<string, string> = {}): { path?: string; message: string }[] {
  try {
    load(text, env)
  } catch (err) {
    assert.ok(err instanceof ConfigError, `not a ConfigError: ${(err as Error).message}`)
    assert.equal(err.code, 'CONFIG_INVALID')
    // The message lists every problem with its path, for the operator.
    for (const p of err.problems) assert.ok(err.message.includes(`${p.path}: ${p.message}`), err.message)
    return [...err.problems]
  }
  assert.fail('expected a ConfigError')
}
const paths = (ps: { path?: string }[]) => ps.map((p) => p.path)

const FAKE = 'templates:\n  demo:\n    provider: fake\n'

describe('config: errors', () => {
  test('every error is listed, each with its path', () => {
    const ps = problems(`
server:
  port: 99999
  colour: blue
pool:
  maxInstances: 0
templates:
  demo:
    provider: fake
    minFree: -1
    idleTimeout: soon
    pathMode: sideways
  Bad_Name:
    provider: fake
`)
    const p = paths(ps)
    for (const want of [
      '/server/port',
      '/server/colour',
      '/pool/maxInstances',
      '/templates/demo/minFree',
      '/templates/demo/idleTimeout',
      '/templates/demo/pathMode',
      '/templates/Bad_Name',
    ]) {
      assert.ok(
        p.some((x) => x === want || x?.startsWith(`${want}`)),
        `${want} not reported in ${JSON.stringify(p)}`,
      )
    }
  })

  test('semantic errors are all reported together too', () => {
    const ps = problems(`
pool:
  maxInstances: 3
  defaultTemplate: nope
gateway:
  mode: subdomain
  upstreamTimeout: 30s
  routeToReplace: /x
templates:
  a:
    provider: fake
    minFree: 5
    maxInstances: 2
    activityIgnore: ['^/ok$', '(unclosed']
`)
    const p = paths(ps)
    for (const want of [
      '/templates/a/activityIgnore/1',
      '/pool/defaultTemplate',
      '/templates/a/minFree',
      '/pool/maxInstances',
      '/gateway/sessionDomain',
      '/gateway/upstreamTimeout',
      '/gateway/routeToReplace',
    ]) {
      assert.ok(p.includes(want), `${want} not reported in ${JSON.stringify(ps)}`)
    }
  })

  test('not YAML, not a mapping, an empty template set', () => {
    assert.match(problems('a: [1, 2')[0]!.message, /not valid YAML/)
    assert.match(problems('- a\n- b\n')[0]!.message, /mapping/)
    assert.deepEqual(paths(problems('templates: {}\n')), ['/templates'])
  })

  test('renamed keys fail and name their replacement', () => {
    const ps = problems(`
pool:
  minFreeInstances: 2
gateway:
  cookieSecret: abcdefabcdefabcdef
templates:
  demo:
    provider: fake
    timeout: 30m
`)
    const byPath = new Map(ps.map((p) => [p.path, p.message]))
    assert.match(byPath.get('/pool/minFreeInstances') ?? '', /templates\.<name>\.minFree/)
    assert.match(byPath.get('/gateway/cookieSecret') ?? '', /gateway\.secret/)
    assert.match(byPath.get('/templates/demo/timeout') ?? '', /idleTimeout/)
  })

  test('a missing config file is an error with its path', () => {
    assert.throws(
      () => loadConfig({ file: 'nope.yaml', cwd: dir, env: {} }),
      (err: unknown) => err instanceof ConfigError && /cannot read/.test(err.message),
    )
  })
})

describe('config: values', () => {
  test('durations: 90s, 30m, 12h, 1.5h, 250ms, 1d and bare milliseconds', () => {
    const c = load(`
worker: { interval: 250ms, orphanGrace: 1d, retainEnded: 90000 }
gateway: { launchTokenTtl: 90s, cookieTtl: 1.5h }
templates:
  demo:
    provider: fake
    idleTimeout: 30m
    maxLifetime: 12h
    startTimeout: 0
`)
    assert.equal(c.worker.intervalMs, 250)
    assert.equal(c.worker.orphanGraceMs, 86_400_000)
    assert.equal(c.worker.retainEndedMs, 90_000)
    assert.equal(c.gateway.launchTokenTtlMs, 90_000)
    assert.equal(c.gateway.cookieTtlMs, 5_400_000)
    const t = c.templates[0]!
    assert.equal(t.idleTimeoutMs, 1_800_000)
    assert.equal(t.maxLifetimeMs, 43_200_000)
    assert.equal(t.startTimeoutMs, 0)
    for (const bad of ['10 minutes', '-5s', '1w', '']) {
      assert.deepEqual(paths(problems(`${FAKE}    idleTimeout: "${bad}"\n`)), ['/templates/demo/idleTimeout'], bad)
    }
  })

  test('defaults: 127.0.0.1:8080, ./data, SQLite under it, keys auth, the first template is the default', () => {
    const c = load(`${FAKE}  other:\n    provider: fake\n`)
    assert.equal(c.server.host, '127.0.0.1')
    assert.equal(c.server.port, 8080)
    assert.equal(c.server.publicUrl, 'http://127.0.0.1:8080')
    assert.equal(c.server.dataDir, join(dir, 'data'))
    assert.deepEqual(c.store, { driver: 'sqlite', path: join(dir, 'data', 'studiopool.db') })
    assert.equal(c.auth.mode, 'keys')
    assert.equal(c.pool.defaultTemplate, 'demo')
    assert.equal(c.templates[0]!.whenFull, 'queue')
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.templates[0]), 'deep-frozen')
  })

  test('secrets: literal, env:NAME, file:PATH; missing ones are errors with their path', () => {
    writeFileSync(join(dir, 'pg-url'), 'postgres://u:p@db/x\n')
    const c = load(
      `store: { driver: postgres, url: "file:pg-url" }
gateway: { secret: "env:GW_SECRET" }
auth:
  keys:
    - { name: ops, role: admin, key: "env:OPS_KEY" }
    - { name: lit, role: requester, key: "literal-key-123456" }
${FAKE}`,
      { GW_SECRET: 'gateway-secret-value', OPS_KEY: 'ops-key-0123456789' },
    )
    // Timeouts default to 5 s connect, 10 s statement, 15 s client read (issue 9 item 4).
    assert.deepEqual(c.store, {
      driver: 'postgres',
      url: 'postgres://u:p@db/x',
      poolSize: 10,
      timeouts: { connectMs: 5000, statementMs: 10_000, queryMs: 15_000, idleInTransactionMs: 60_000 },
    })
    assert.equal(c.gateway.secret, 'gateway-secret-value')
    assert.deepEqual(
      c.auth.keys.map((k) => [k.name, k.role, k.key]),
      [
        ['ops', 'admin', 'ops-key-0123456789'],
        ['lit', 'requester', 'literal-key-123456'],
      ],
    )
    const ps = problems(`store: { driver: postgres, url: "file:no-such-file" }
gateway: { secret: "env:NOT_SET" }
auth: { keys: [ { name: a, role: admin, key: short } ] }
${FAKE}`)
    assert.deepEqual(paths(ps).sort(), ['/auth/keys/0/key', '/gateway/secret', '/store/url'])
    assert.ok(!ps.some((p) => p.message.includes('short')), 'a secret value never appears in an error')
  })

  test('env overrides the file, flags override env', () => {
    const c = load(
      `server: { port: 9000, host: 0.0.0.0 }\n${FAKE}`,
      { PORT: '9100', STUDIOPOOL_PUBLIC_URL: 'https://sessions.example.org/' },
      { overrides: { port: 9200 } },
    )
    assert.equal(c.server.port, 9200)
    assert.equal(c.server.host, '0.0.0.0')
    assert.equal(c.server.publicUrl, 'https://sessions.example.org')
    assert.deepEqual(paths(problems(FAKE, { PORT: 'eighty' })), ['/server/port'])
    assert.equal(load(FAKE, { DATABASE_URL: 'postgres://db/pool' }).store.driver, 'postgres')
  })

  test('server.publicUrl with a path: the base path, with or without the trailing slash; none without a path', () => {
    for (const url of ['https://portal.example.org/studiopool/', 'https://portal.example.org/studiopool']) {
      const c = load(`server: { publicUrl: "${url}" }\n${FAKE}`)
      assert.equal(c.server.publicUrl, 'https://portal.example.org/studiopool')
      assert.equal(c.server.basePath, '/studiopool')
    }
    const nested = load(FAKE, { STUDIOPOOL_PUBLIC_URL: 'https://portal.example.org/tools/studiopool/' })
    assert.equal(nested.server.basePath, '/tools/studiopool')
    assert.equal(load(`server: { publicUrl: "https://sessions.example.org/" }\n${FAKE}`).server.basePath, '')
    assert.equal(load(FAKE).server.basePath, '')
    assert.deepEqual(paths(problems(`server: { publicUrl: "https://x.example/a?b=1" }\n${FAKE}`)), [
      '/server/publicUrl',
    ])
  })
})

describe('config: the seed’s environment', () => {
  test('no file and no IMAGE_ID: the local demo template', () => {
    const c = load(undefined)
    assert.equal(c.templates.length, 1)
    assert.equal(c.templates[0]!.name, 'demo')
    assert.equal(c.templates[0]!.provider, 'local')
    assert.ok((c.templates[0]!.settings.command as string[]).some((a) => a.endsWith('server.mjs')))
  })

  test('no file + IMAGE_ID: the seed’s EC2 RStudio template', () => {
    const c = load(undefined, {
      IMAGE_ID: 'ami-0123456789abcdef0',
      IMAGE_TYPE: 't3.large',
      KEY_NAME: 'ops',
      SECURITY_GROUP: 'sg-1, sg-2',
      INSTANCE_PROFILE: 'rstudio-profile',
      REGION: 'eu-west-1',
      ACCOUNT: '123456789012',
      MIN_FREE_INSTANCES: '3',
      MAX_INSTANCES: '6',
      TIMEOUT_INSTANCE: '60000',
    })
    assert.equal(c.templates.length, 1)
    const t = c.templates[0]!
    assert.equal(t.name, 'rstudio')
    assert.equal(t.provider, 'ec2')
    assert.equal(t.port, 8787)
    assert.equal(t.pathMode, 'strip')
    assert.equal(t.settings.imageId, 'ami-0123456789abcdef0')
    assert.equal(t.settings.instanceType, 't3.large')
    assert.equal(t.settings.keyName, 'ops')
    assert.deepEqual(t.settings.securityGroupIds, ['sg-1', 'sg-2'])
    assert.equal(t.settings.iamInstanceProfile, 'rstudio-profile')
    assert.equal(c.providers.ec2?.region, 'eu-west-1')
    assert.equal(t.minFree, 3)
    assert.equal(t.idleTimeoutMs, 60_000, 'TIMEOUT_INSTANCE is milliseconds, as in the seed')
    assert.equal(c.pool.maxInstances, 6)
    assert.equal(c.pool.defaultTemplate, 'rstudio')
  })

  test('MIN_FREE_INSTANCES / TIMEOUT_INSTANCE apply to the default template of a file', () => {
    const c = load(
      `pool: { defaultTemplate: b }\ntemplates:\n  a: { provider: fake }\n  b: { provider: fake, maxInstances: 20 }\n`,
      { MIN_FREE_INSTANCES: '4', TIMEOUT_INSTANCE: '120000' },
    )
    const [a, b] = c.templates
    assert.equal(a!.minFree, 0)
    assert.equal(b!.minFree, 4)
    assert.equal(b!.idleTimeoutMs, 120_000)
    assert.deepEqual(paths(problems(FAKE, { MIN_FREE_INSTANCES: 'three' })), ['/templates/demo/minFree'])
    assert.deepEqual(paths(problems(FAKE, { MAX_INSTANCES: '0' })), ['/pool/maxInstances'])
  })

  test('ARENA_POOL_SERVICE_KEY is a requester key, PROXY_KEY a proxy key and the split gateway’s key', () => {
    const c = load(FAKE, {
      ARENA_POOL_SERVICE_KEY: 'arena-key-0123456789',
      PROXY_KEY: 'proxy-key-0123456789',
      SERVICE_URL: 'http://api:8080/',
    })
    assert.deepEqual(
      c.auth.keys.map((k) => [k.name, k.role, k.key]),
      [
        ['arena', 'requester', 'arena-key-0123456789'],
        ['proxy', 'proxy', 'proxy-key-0123456789'],
      ],
    )
    assert.equal(c.split.proxyKey, 'proxy-key-0123456789')
    assert.equal(c.split.serviceUrl, 'http://api:8080')
    assert.deepEqual(paths(problems(FAKE, { PROXY_KEY: 'short' })), ['/auth/keys/0/key'])
  })

  test('seed proxy variables: DEFAULT_URL, ROUTE_TO_REPLACE with STRING_TO_REPLACE', () => {
    const c = load(FAKE, {
      DEFAULT_URL: 'https://portal.example.org',
      ROUTE_TO_REPLACE: 'http://REPLACE_ME:8787/',
      STRING_TO_REPLACE: 'REPLACE_ME',
    })
    assert.equal(c.gateway.defaultUrl, 'https://portal.example.org')
    assert.equal(c.gateway.routeToReplace, 'http://REPLACE_ME:8787/')
    assert.equal(c.gateway.stringToReplace, 'REPLACE_ME')
    assert.deepEqual(paths(problems(FAKE, { ROUTE_TO_REPLACE: 'http://REPLACE_ME:8787/' })), [
      '/gateway/routeToReplace',
    ])
  })
})
