/**
 * What a Prometheus operator sees (issue 17, "Metrics"): the real server's /metrics passes
 * `promtool check metrics`, Node and process metrics have their standard names, build info, the
 * leader gauge and time to ready are there, a `metrics` key reads /metrics and nothing else, and the
 * alert rules and the Grafana dashboard under deploy/ name only metrics the server exports.
 * promtool comes from Debian's `prometheus` package (.ci/run installs it).
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { packageVersion } from '../../src/version.js'
import { call, command, startAppStub, startServer, waitFor, type TestServer } from './helpers.js'

const ARENA = 'arena-requester-key-0123456789'
const root = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url))

function promtool(args: string[], input?: string): { status: number | null; out: string } {
  const r = spawnSync('promtool', args, { input, encoding: 'utf8', timeout: 30_000 })
  if (r.error) throw new Error(`promtool (Debian package prometheus) is needed: ${r.error.message}`)
  return { status: r.status, out: `${r.stdout}${r.stderr}` }
}

/** Every series name the exposition declares, with the series a histogram or summary adds. */
function exportedNames(text: string): Set<string> {
  const names = new Set<string>()
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(m[1])
    if (m[2] === 'histogram') for (const s of ['_bucket', '_count', '_sum']) names.add(m[1] + s)
    if (m[2] === 'summary') for (const s of ['_count', '_sum']) names.add(m[1] + s)
  }
  return names
}

const PROMQL_WORDS = new Set(
  'sum min max avg count stddev stdvar topk bottomk quantile group by without on ignoring group_left group_right and or unless bool offset rate irate increase delta idelta deriv histogram_quantile abs ceil floor round clamp_min clamp_max time vector scalar absent absent_over_time max_over_time min_over_time avg_over_time sum_over_time label_replace'.split(
    ' ',
  ),
)

/** The metric names a PromQL expression uses: identifiers outside strings, label matchers, groupings and ranges. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '')
    .replace(/\[[^\]]*\]/g, '')
  return [...bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)].map((m) => m[0]).filter((w) => !PROMQL_WORDS.has(w))
}

describe('metrics for operators', () => {
  let app: Awaited<ReturnType<typeof startAppStub>>
  let s: TestServer
  let metricsKey = ''
  let text = ''

  before(async () => {
    app = await startAppStub()
    s = await startServer(
      'sqlite',
      `worker: { interval: 100ms }
templates:
  demo:
    provider: fake
    minFree: 1
    fake: { address: ${JSON.stringify(app.url)} }
`,
      { ARENA_POOL_SERVICE_KEY: ARENA },
    )
    const created = await call(s.url, 'POST', '/api/v1/keys', {
      key: s.adminKey,
      body: { name: 'prometheus', role: 'metrics' },
    })
    assert.ok(created.status < 300, created.text)
    metricsKey = created.json.key
    await waitFor(
      'a warm demo instance',
      async () => (await s.store.listInstances({ template: 'demo', assigned: false, states: ['ready'] })).length === 1,
      10_000,
    )
    const r = await command(s.url, ARENA, 'REQUEST_SESSION', { userId: 'alice', template: 'demo' })
    assert.equal(r.status, 200, r.text)
    await waitFor('the worker to lead and report it', async () => {
      text = (await call(s.url, 'GET', '/metrics', { key: metricsKey })).text
      return /^studiopool_worker_leader 1$/m.test(text)
    })
  })
  after(async () => {
    await s?.close()
    await app?.close()
  })

  test('promtool check metrics finds nothing wrong in a live scrape', () => {
    const r = promtool(['check', 'metrics'], text)
    assert.equal(r.status, 0, r.out)
    assert.equal(r.out.trim(), '', r.out)
  })

  test('Node and process metrics keep their standard names; build info, leader and time to ready are there', () => {
    const names = exportedNames(text)
    for (const n of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes'])
      assert.ok(names.has(n), `${n} exported`)
    assert.ok(![...names].some((n) => n.startsWith('studiopool_process_')), 'no doubly prefixed process metrics')
    const info = text.match(/^studiopool_build_info\{version="([^"]+)",node="([^"]+)"\} 1$/m)
    assert.ok(info, 'build info')
    assert.equal(info[1], packageVersion())
    assert.equal(info[2], process.version)
    assert.match(text, /^studiopool_session_ready_seconds_count\{template="demo",outcome="warm"\} 1$/m)
  })

  test('a metrics key reads /metrics and nothing else', async () => {
    assert.equal((await call(s.url, 'GET', '/metrics', { key: metricsKey })).status, 200)
    for (const [method, path, body] of [
      ['GET', '/api/v1/instances', undefined],
      ['GET', '/api/v1/templates', undefined],
      ['GET', '/api/v1/keys', undefined],
      ['GET', '/api/v1/usage', undefined],
      ['POST', '/api/v1/sessions', { userId: 'mallory', template: 'demo' }],
      ['POST', '/api/commands', { command: 'GET_STATUS', payload: {} }],
    ] as const) {
      const r = await call(s.url, method, path, { key: metricsKey, body })
      assert.equal(r.status, 403, `${method} ${path}: ${r.text}`)
      assert.equal(r.json.error.code, 'FORBIDDEN')
    }
    const live = await s.store.listInstances({ states: ['ready'] })
    assert.equal(live.filter((i) => i.ownerId === 'mallory').length, 0)
  })

  test('the alert rules pass promtool and name only exported metrics', () => {
    const file = root('deploy/prometheus/alerts.yml')
    const r = promtool(['check', 'rules', file])
    assert.equal(r.status, 0, r.out)
    const names = exportedNames(text)
    const doc = parseYaml(readFileSync(file, 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] }
    const rules = doc.groups.flatMap((g) => g.rules)
    assert.ok(rules.length >= 8)
    for (const rule of rules) {
      const used = metricNames(rule.expr).filter((n) => n !== 'up') // `up` is Prometheus's own
      assert.ok(used.length > 0 || /\bup\b/.test(rule.expr), `${rule.alert} uses a metric`)
      for (const n of used) assert.ok(names.has(n), `${rule.alert}: ${n} is not exported`)
    }
  })

  test("the Grafana dashboard's every query names only exported metrics", () => {
    const names = exportedNames(text)
    const dash = JSON.parse(readFileSync(root('deploy/grafana/studiopool-dashboard.json'), 'utf8')) as {
      panels: { title: string; targets: { expr: string }[] }[]
    }
    assert.ok(dash.panels.length >= 10)
    for (const p of dash.panels) {
      assert.ok(p.targets.length > 0, p.title)
      for (const t of p.targets) {
        const used = metricNames(t.expr)
        assert.ok(used.length > 0, `${p.title}: ${t.expr}`)
        for (const n of used) assert.ok(names.has(n), `${p.title}: ${n} is not exported`)
      }
    }
  })

  test('the check itself catches a misnamed metric', () => {
    assert.deepEqual(metricNames('sum by (template) (rate(studiopool_nope_total{a="b"}[5m])) > 1'), [
      'studiopool_nope_total',
    ])
    assert.ok(!exportedNames(text).has('studiopool_nope_total'))
  })
})
