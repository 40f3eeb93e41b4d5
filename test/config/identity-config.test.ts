/**
 * The configuration of issue 8: templates' `upstreamHeaders` and the one grammar for trusted peers
 * (`server.trustProxy`, `dashboard.header.trustedProxies`), each mistake listed with its path.
 */
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, loadConfig } from '../../src/config/load.js'

const dir = mkdtempSync(join(tmpdir(), 'sp-config-id-'))
after(() => rmSync(dir, { recursive: true, force: true }))
const load = (text: string) => loadConfig({ text, env: {}, cwd: dir })
function problems(text: string): { path?: string; message: string }[] {
  try {
    load(text)
  } catch (err) {
    assert.ok(err instanceof ConfigError, (err as Error).message)
    return [...err.problems]
  }
  assert.fail('expected a ConfigError')
}

test('upstreamHeaders: kept as written; unknown tokens, reserved and identity names, control characters are refused', () => {
  const ok = load(
    `templates:\n  j:\n    provider: fake\n    upstreamHeaders: { Authorization: 'token {{appToken}}', X-App: '{{user}}@{{instanceId}}' }\n`,
  )
  assert.deepEqual(ok.templates[0]!.upstreamHeaders, {
    Authorization: 'token {{appToken}}',
    'X-App': '{{user}}@{{instanceId}}',
  })
  assert.deepEqual(load('templates:\n  j: { provider: fake }\n').templates[0]!.upstreamHeaders, {})
  const ps = problems(
    [
      'templates:',
      '  j:',
      '    provider: fake',
      '    upstreamHeaders:',
      "      Authorization: 'token {{secret}}'",
      "      Host: 'evil'",
      "      X-Forwarded-User: 'root'",
      "      Remote-User: 'root'",
      '      X-Bad: "a\\r\\nInjected: yes"',
      "      'Bad Name': 'x'",
      '',
    ].join('\n'),
  )
  const by = (name: string) => ps.filter((p) => p.path === `/templates/j/upstreamHeaders/${name}`).map((p) => p.message)
  assert.match(by('Authorization').join(), /unknown token \{\{secret\}\}/)
  assert.match(by('Host').join(), /set by the gateway itself/)
  assert.match(by('X-Forwarded-User').join(), /identity header/)
  assert.match(by('Remote-User').join(), /identity header/)
  assert.match(by('X-Bad').join(), /printable ASCII only/)
  assert.match(by('Bad Name').join(), /not a header field name/)
})

test('trusted peers: addresses, CIDR ranges and loopback; anything else is an error naming the entry', () => {
  const ok = load(
    'server:\n  trustProxy: [loopback, 10.0.0.5, 10.1.0.0/16, "fd00::/8"]\ndashboard:\n  login: header\n  header: { trustedProxies: [192.0.2.7] }\ntemplates:\n  j: { provider: fake }\n',
  )
  assert.deepEqual(ok.server.trustProxy, ['loopback', '10.0.0.5', '10.1.0.0/16', 'fd00::/8'])
  const ps = problems(
    'server:\n  trustProxy: [lopback, 10.0.0.0/33]\ndashboard:\n  login: header\n  header: { trustedProxies: [proxy.example.org] }\ntemplates:\n  j: { provider: fake }\n',
  )
  assert.deepEqual(
    ps.map((p) => [p.path, p.message]),
    [
      ['/server/trustProxy', '"lopback" is not an address, a CIDR range or the word loopback'],
      ['/server/trustProxy', '"10.0.0.0/33": the prefix length must be 0–32'],
      ['/dashboard/header/trustedProxies', '"proxy.example.org" is not an address, a CIDR range or the word loopback'],
    ],
  )
})
