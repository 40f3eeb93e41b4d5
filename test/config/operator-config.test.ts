/**
 * Issue 17 "Configuration": each wrong configuration and the exact message an operator gets; the
 * default template kept; the documented precedence of the seed's unprefixed variables; `config check`,
 * `config print` and `serve --degraded` through the real binary.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { ConfigError, loadConfigDetailed } from '../../src/config/load.js'
import { BIN, spawnServer } from '../helpers/server-process.js'

const dir = mkdtempSync(join(tmpdir(), 'sp-opcfg-'))
after(() => rmSync(dir, { recursive: true, force: true }))

/** The exact message lines of a configuration that fails to load. */
function messages(text: string, env: Record<string, string> = {}): string[] {
  try {
    loadConfigDetailed({ text, env, cwd: dir })
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.message.split('\n').slice(1)
  }
  assert.fail('expected a ConfigError')
}

const FAKE = 'templates:\n  demo:\n    provider: fake\n'

describe('config messages name the key, the value and what is allowed', () => {
  const cases: [string, string, string[]][] = [
    [
      'a duration in words',
      `${FAKE}    idleTimeout: 30 minutes\n`,
      [
        '  - /templates/demo/idleTimeout: not a duration: 30 minutes (allowed: 90s, 30m, 12h, 1d, or a number of milliseconds)',
      ],
    ],
    [
      'a misspelt top-level key',
      'dashbord: {admins: [ada]}\n',
      [
        '  - /dashbord: unknown key "dashbord"; did you mean "dashboard"? (allowed: server, auth, store, pool, worker, gateway, widget, dashboard, split, ha, providers, templates, cost, budgets, webhooks, hooks)',
      ],
    ],
    [
      'a misspelt template key and a misspelt choice',
      `${FAKE}    idelTimeout: 30m\n    pathMode: stirp\n`,
      [
        '  - /templates/demo/idelTimeout: unknown key "idelTimeout"; did you mean "idleTimeout"? (allowed: displayName, description, provider, minFree, maxInstances, schedule, warmPool, idleTimeout, maxLifetime, startTimeout, port, healthPath, pathMode, hostHeader, whenFull, allowedGroups, activityIgnore, pricePerHour, price, resources, injectWidget, mode, routing, minInstances, maxConnectionsPerInstance, loadFactor, scaleInCooldown, drainGrace, queueSize, queueTimeout, recycleAfterRequests, recycleAfterHours, upstreamHeaders, local, ec2, fake, docker, slurm, kubernetes)',
        '  - /templates/demo/pathMode: "stirp" is not one of: strip, keep; did you mean "strip"?',
      ],
    ],
    [
      'numbers out of range and an unknown level',
      `${FAKE}server: {port: 99999, logLevel: verbose}\n`,
      [
        '  - /server/port: not allowed: 99999 (a whole number from 0 to 65535)',
        '  - /server/logLevel: "verbose" is not one of: fatal, error, warn, info, debug, trace, silent',
      ],
    ],
    [
      'an unknown store driver',
      `${FAKE}store: {driver: postgress}\n`,
      ['  - /store/driver: "postgress" is not one of: sqlite, postgres; did you mean "postgres"?'],
    ],
    [
      'a misspelt key of the chosen store',
      `${FAKE}store: {driver: sqlite, pth: x.db}\n`,
      ['  - /store/pth: unknown key "pth"; did you mean "path"? (allowed: driver, path)'],
    ],
    [
      'a Postgres store without its URL',
      `${FAKE}store: {driver: postgres}\n`,
      ['  - /store/url: required key "url" is missing'],
    ],
    [
      'a public URL that is not http(s)',
      `${FAKE}server: {publicUrl: "ftp://sessions.example.org"}\n`,
      [
        '  - /server/publicUrl: not allowed: "ftp://sessions.example.org" (an http(s) URL, optionally with a path but without query or fragment, e.g. https://sessions.example.org or https://portal.example.org/studiopool/)',
      ],
    ],
    [
      'a public URL with a query (sub-path hosting takes a path only)',
      `${FAKE}server: {publicUrl: "https://portal.example.org/studiopool/?x=1"}\n`,
      [
        '  - /server/publicUrl: not allowed: "https://portal.example.org/studiopool/?x=1" (an http(s) URL, optionally with a path but without query or fragment, e.g. https://sessions.example.org or https://portal.example.org/studiopool/)',
      ],
    ],
    [
      'a public URL with a fragment or an empty path segment',
      `${FAKE}server: {publicUrl: "https://portal.example.org//studiopool#top"}\n`,
      [
        '  - /server/publicUrl: not allowed: "https://portal.example.org//studiopool#top" (an http(s) URL, optionally with a path but without query or fragment, e.g. https://sessions.example.org or https://portal.example.org/studiopool/)',
      ],
    ],
  ]
  for (const [name, text, want] of cases) test(name, () => assert.deepEqual(messages(text), want))

  test('a secret in a wrong shape is never echoed', () => {
    const lines = messages(`${FAKE}auth: {keys: [{name: a, role: admin, key: 123456789012345}]}\n`)
    assert.deepEqual(lines, ['  - /auth/keys/0/key: expected a string: got (a secret, not shown)'])
  })
})

describe('a file without templates keeps the default template', () => {
  test('a file with only dashboard.admins works and serves the demo template', () => {
    const { config } = loadConfigDetailed({ text: 'dashboard: {admins: [ada]}\n', env: {}, cwd: dir })
    assert.deepEqual(config.dashboard.admins, ['ada'])
    assert.deepEqual(
      config.templates.map((t) => [t.name, t.provider]),
      [['demo', 'local']],
    )
    assert.equal(config.pool.defaultTemplate, 'demo')
  })
  test('an explicitly empty templates mapping is still an error', () => {
    assert.deepEqual(messages('templates: {}\n'), ['  - /templates: at least one template is needed'])
  })
})

describe("precedence: the seed's unprefixed variables never silently beat the file", () => {
  test('driver: sqlite plus DATABASE_URL=postgres://… stays SQLite, with a warning naming both', () => {
    const r = loadConfigDetailed({
      text: `${FAKE}store: {driver: sqlite}\nserver: {port: 9000}\n`,
      env: { DATABASE_URL: 'postgres://u:pw@127.0.0.1/test', PORT: '7000', MAX_INSTANCES: '5' },
      cwd: dir,
    })
    assert.equal(r.config.store.driver, 'sqlite')
    assert.equal(r.config.server.port, 9000)
    assert.equal(r.config.pool.maxInstances, 5, 'a variable the file does not contradict still applies')
    assert.deepEqual(r.warnings, [
      "PORT=7000 is ignored: the configuration file sets server.port (9000), and a file value beats the seed's unprefixed variables (use STUDIOPOOL_* variables to override the file)",
      'DATABASE_URL is ignored: the configuration file sets store ("sqlite"), and a file value beats the seed\'s unprefixed variables (use STUDIOPOOL_DATABASE_URL to override the file)',
    ])
    assert.equal(r.sources.get('/pool/maxInstances'), 'env MAX_INSTANCES')
    assert.equal(r.sources.get('/server/port'), 'file')
  })
  test('STUDIOPOOL_* variables beat the file (documented), and a file without a store takes DATABASE_URL', () => {
    const r = loadConfigDetailed({
      text: `${FAKE}server: {port: 9000}\n`,
      env: { STUDIOPOOL_PORT: '9100', DATABASE_URL: join(dir, 'seed.db') },
      cwd: dir,
    })
    assert.equal(r.config.server.port, 9100)
    assert.equal(r.config.store.driver, 'sqlite')
    assert.equal(r.config.store.driver === 'sqlite' && r.config.store.path, join(dir, 'seed.db'))
    assert.deepEqual(r.warnings, [])
    assert.equal(r.sources.get('/server/port'), 'env STUDIOPOOL_PORT')
  })
  test('MIN_FREE_INSTANCES does not override the minFree the file sets on the default template', () => {
    const r = loadConfigDetailed({ text: `${FAKE}    minFree: 2\n`, env: { MIN_FREE_INSTANCES: '4' }, cwd: dir })
    assert.equal(r.config.templates[0]!.minFree, 2)
    assert.match(
      r.warnings[0]!,
      /^MIN_FREE_INSTANCES=4 is ignored: the configuration file sets templates\.demo\.minFree/,
    )
  })
})

function cli(args: string[], env: Record<string, string> = {}, cwd = dir) {
  return spawnSync(process.execPath, [BIN, ...args], {
    cwd,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: cwd, ...env },
    timeout: 60_000,
  })
}

describe('studiopool config check / config print', () => {
  const file = (name: string, text: string) => {
    const p = join(dir, name)
    writeFileSync(p, text)
    return p
  }

  test('check: a valid file exits 0 and names its templates; a wrong one exits 2 listing every problem', () => {
    const ok = cli(['config', 'check', file('ok.yaml', 'dashboard: {admins: [ada]}\n')])
    assert.equal(ok.status, 0, ok.stderr)
    assert.equal(ok.stdout, `configuration OK (${join(dir, 'ok.yaml')}): templates demo (local)\n`)

    const badPath = file(
      'bad.yaml',
      'templates:\n  demo:\n    provider: local\n    local: {comand: [node]}\n  two:\n    provider: lcoal\n  three:\n    provider: local\n    local: {command: [no-such-program-xyz]}\n',
    )
    const bad = cli(['config', 'check', badPath])
    assert.equal(bad.status, 2)
    assert.equal(bad.stdout, '')
    assert.equal(
      bad.stderr,
      [
        `invalid configuration (${badPath}):`,
        '  - /templates/demo: local.command: required key "command" is missing',
        '  - /templates/demo: local.comand: unknown key "comand"; did you mean "command"? (allowed: command, env, stopGrace, home)',
        '  - /templates/two: provider lcoal: unknown provider "lcoal"; did you mean "local"? (known: local, fake, ec2, docker, slurm, kubernetes)',
        '  - /templates/three: local.command[0]: program "no-such-program-xyz" was not found on PATH or is not executable',
        '',
      ].join('\n'),
    )
  })

  test('print: every value with its source (default, file, env NAME), secrets redacted, conflicts warned', () => {
    const p = file(
      'print.yaml',
      `${FAKE}server: {port: 9000}\ngateway: {secret: literal-gateway-secret-123}\nauth:\n  keys: [{name: ci, role: requester, key: literal-requester-key-456}]\n`,
    )
    const r = cli(['config', 'print', '-c', p], { PORT: '7000', STUDIOPOOL_LOG_LEVEL: 'debug' })
    assert.equal(r.status, 0, r.stderr)
    const lines = r.stdout.split('\n')
    for (const want of [
      '  port: 9000  # file',
      '  logLevel: debug  # env STUDIOPOOL_LOG_LEVEL',
      '  host: 127.0.0.1  # default',
      '  secret: "[redacted]"  # file',
      '  cookieName: studiopool_session  # default',
      '  keys: [{name: ci, role: requester, key: "[redacted]"}]  # file',
    ])
      assert.ok(lines.includes(want), `missing line ${JSON.stringify(want)} in:\n${r.stdout}`)
    assert.doesNotMatch(r.stdout + r.stderr, /literal-gateway-secret|literal-requester-key/)
    assert.match(r.stderr, /^warning: PORT=7000 is ignored: the configuration file sets server\.port \(9000\)/m)
  })
})

describe('serve refuses templates that cannot serve, unless --degraded', () => {
  const BROKEN = `server: { dataDir: DATA }\ntemplates:\n  demo:\n    provider: fake\n    minFree: 0\n  broken:\n    provider: local\n    local: {comand: [node, app.js]}\n`

  test('exit 2 naming the template, the key and the flag', async () => {
    const cwd = mkdtempSync(join(dir, 'serve-'))
    writeFileSync(join(cwd, 'studiopool.yaml'), BROKEN.replace('DATA', JSON.stringify(join(cwd, 'data'))))
    const child = spawn(process.execPath, [BIN, 'serve', '--port', '0'], {
      cwd,
      env: { PATH: process.env.PATH ?? '', HOME: cwd, STUDIOPOOL_LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
    clearTimeout(timer)
    assert.equal(code, 2, out + err)
    assert.equal(
      err,
      [
        'invalid configuration (start):',
        '  - /templates/broken: local.command: required key "command" is missing; local.comand: unknown key "comand"; did you mean "command"? (allowed: command, env, stopGrace, home)',
        'studiopool serve --degraded starts anyway: these templates answer 503 TEMPLATE_UNAVAILABLE, the others serve',
        '',
      ].join('\n'),
    )
    assert.doesNotMatch(out, /listening on/)
  })

  test('--degraded starts: the broken template is unavailable, the other serves', async () => {
    const cwd = mkdtempSync(join(dir, 'degraded-'))
    const s = await spawnServer({
      cwd,
      config: BROKEN.replace('DATA', JSON.stringify(join(cwd, 'data'))),
      args: ['--degraded'],
    })
    try {
      const r = await fetch(`${s.url}/readyz`)
      const body = (await r.json()) as { checks: Record<string, string> }
      assert.match(
        body.checks['template:broken']!,
        /^unavailable: local\.comand: unknown key "comand"|unavailable: .*comand/,
      )
      assert.equal(body.checks['template:demo'], 'ok')
      assert.match(s.output(), /started --degraded/)
    } finally {
      await s.kill()
    }
  })
})

test('serve warns at start when a seed variable conflicts with the file, and the file wins', async () => {
  const cwd = mkdtempSync(join(dir, 'warn-'))
  const s = await spawnServer({
    cwd,
    config: `server: { dataDir: ${JSON.stringify(join(cwd, 'data'))} }\nstore: { driver: sqlite }\n${FAKE}`,
    env: { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' },
  })
  try {
    const line = s
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; msg: string; store?: string })
    const warning = line.find((l) => l.msg.startsWith('configuration: DATABASE_URL is ignored'))
    assert.ok(warning, s.output())
    assert.equal(warning.level, 40)
    assert.equal((await fetch(`${s.url}/healthz`)).status, 200, 'it runs on SQLite, not the unreachable Postgres')
  } finally {
    await s.kill()
  }
})
