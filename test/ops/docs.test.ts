/**
 * Docs that cannot drift (issue 17): the README's configuration reference against the schema (every
 * key documented, no documented key unknown), every `section.key` the docs name is a real key, and
 * the README's command-protocol examples run against a server on the default configuration.
 */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import type { TSchema } from '@sinclair/typebox'
import { ConfigSchema, TemplateSchema } from '../../src/config/schema.js'
import { localProviderSettingsSchema } from '../../src/providers/local/local-provider-config.js'
import { kubernetesProviderSettingsSchema } from '../../src/providers/kubernetes/kubernetes-provider-schema.js'
import { REPO } from '../helpers/server-process.js'

const README = readFileSync(join(REPO, 'README.md'), 'utf8')
const SECTIONS = ['server', 'auth', 'store', 'pool', 'worker', 'gateway', 'widget', 'dashboard', 'split', 'ha'] as const

const propsOf = (s: TSchema): string[] => {
  const o = s as { properties?: Record<string, unknown>; anyOf?: TSchema[] }
  if (o.properties) return Object.keys(o.properties)
  return [...new Set((o.anyOf ?? []).flatMap(propsOf))]
}
const top = (ConfigSchema as unknown as { properties: Record<string, TSchema> }).properties
/** The cost sections (docs/cost.md): `cost.<key>`, and the `budgets` and `webhooks` lists. */
const costKeys = new Set([
  ...propsOf(top.cost!).map((k) => `cost.${k}`),
  'cost.rates.<provider>',
  'budgets',
  'webhooks',
  'hooks',
])
/** Every `section.key` of the schema. */
const schemaKeys = new Set(SECTIONS.flatMap((s) => propsOf(top[s]!).map((k) => `${s}.${k}`)))

/** The first cell's keys of each row of the table that follows `heading`. */
function tableKeys(heading: string): string[] {
  const start = README.indexOf(heading)
  assert.ok(start >= 0, `README has "${heading}"`)
  const lines = README.slice(start).split('\n').slice(1)
  const rows: string[] = []
  let inTable = false
  for (const l of lines) {
    if (l.startsWith('|')) inTable = true
    else if (inTable) break
    if (!l.startsWith('| `')) continue
    const cell = l.split('|')[1]!
    const keys = [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!)
    const section = keys[0]!.includes('.') ? keys[0]!.slice(0, keys[0]!.lastIndexOf('.')) : ''
    for (const k of keys.map((x) => x.replace(/\[\]$/, '')))
      rows.push(k.includes('.') || !section ? k : `${section}.${k}`)
  }
  return rows
}

test("the README's configuration reference names every schema key and no other", () => {
  const documented = tableKeys('### Reference')
  const missing = [...schemaKeys].filter((k) => !documented.includes(k))
  assert.deepEqual(missing, [], 'schema keys missing from the README reference')
  const localKeys = [
    ...propsOf(localProviderSettingsSchema).map((k) => `providers.local.${k}`),
    ...propsOf(kubernetesProviderSettingsSchema).map((k) => `providers.kubernetes.${k}`),
  ]
  const unknown = documented.filter(
    (k) =>
      !schemaKeys.has(k) &&
      !localKeys.includes(k) &&
      !costKeys.has(k) &&
      !['providers.<name>', 'templates.<name>'].includes(k),
  )
  assert.deepEqual(unknown, [], 'documented keys the schema does not know')
  assert.deepEqual(
    localKeys.filter((k) => k.startsWith('providers.local.') && !documented.includes(k)),
    [],
    'providers.local keys missing from the reference',
  )
})

test("the README's template keys table names every template key and no other", () => {
  const documented = tableKeys('Template keys:')
  const keys = propsOf(TemplateSchema)
  assert.deepEqual(
    keys.filter((k) => !documented.includes(k)),
    [],
    'template keys missing',
  )
  assert.deepEqual(
    documented.filter((k) => !keys.includes(k)),
    [],
    'documented template keys the schema does not know',
  )
})

test('every `section.key` the README and docs/ name is a configuration key', () => {
  const files = [
    'README.md',
    ...readdirSync(join(REPO, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ]
  const wrong: string[] = []
  const re = new RegExp(`\`(${SECTIONS.join('|')})\\.([A-Za-z]+)(\\()?`, 'g')
  // Code, not configuration: the pool's and the store's members the docs name.
  const code = new Set([
    'pool.adopt',
    'pool.updateAddress',
    'pool.markVanished',
    'store.dialect',
    'pool.pendingStops',
    'pool.cost',
  ])
  for (const f of files) {
    const text = readFileSync(join(REPO, f), 'utf8')
    for (const m of text.matchAll(re)) {
      const key = `${m[1]}.${m[2]}`
      if (!m[3] && !code.has(key) && !schemaKeys.has(key)) wrong.push(`${f}: ${key}`)
    }
  }
  assert.deepEqual([...new Set(wrong)], [])
})

/** The shell commands of the README's first ```sh block after `heading` (continuation lines joined, comments dropped). */
function shBlock(heading: string): string[] {
  const start = README.indexOf(heading)
  const open = README.indexOf('```sh\n', start)
  const body = README.slice(open + 6, README.indexOf('\n```', open + 6))
  return body
    .replace(/\\\n\s*/g, '')
    .split('\n')
    .filter((l) => l.trim() && !l.trim().startsWith('#'))
}

test("the README's quick-start and command-protocol examples work on the default configuration", async () => {
  const { mkdtempSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { execFileSync } = await import('node:child_process')
  const { spawnServer, killAll } = await import('../helpers/server-process.js')
  const dir = mkdtempSync(join(tmpdir(), 'sp-docs-'))
  // No configuration file: the defaults, as `npm start` runs them (the data directory in ./data).
  const s = await spawnServer({ cwd: dir, config: '' })
  try {
    const sh = (cmd: string) =>
      execFileSync('sh', ['-c', cmd.replaceAll('http://127.0.0.1:8080', s.url)], { cwd: dir, encoding: 'utf8' })
    // Quick start: KEY from the bootstrap key file, then a REQUEST_SESSION.
    const quick = shBlock('On first start `npm start` creates an admin key')
    assert.match(quick[0]!, /^KEY=\$\(cat data\/bootstrap-admin\.key\)$/)
    const first = JSON.parse(sh(quick.join('\n'))) as { instanceId?: string; url?: string }
    assert.ok(first.instanceId && first.url, JSON.stringify(first))

    const protocol = shBlock('## The command protocol (seed-compatible)')
    assert.match(protocol[0]!, /^KEY=sp_…/)
    const key = `KEY=$(cat data/bootstrap-admin.key)\n`
    const [request, list, one, del] = protocol.slice(1)
    const granted = JSON.parse(sh(key + request!)) as { instanceId: string; outcome: string }
    assert.ok(granted.instanceId, `REQUEST_RSTUDIO as documented: ${JSON.stringify(granted)}`)
    const swap = (c: string) => c.replaceAll('u5b5ekzjcqxwfbzogab5', granted.instanceId)
    const listed = JSON.parse(sh(key + list!)) as { instances: string[] }
    assert.ok(listed.instances.includes(granted.instanceId), JSON.stringify(listed))
    const status = JSON.parse(sh(key + swap(one!))) as { instance: { userId: string } }
    assert.equal(status.instance.userId, '1234-abcd')
    assert.deepEqual(JSON.parse(sh(key + swap(del!))), { status: 'OK' })
  } finally {
    await s.kill()
    killAll(join(dir, 'data'))
    rmSync(dir, { recursive: true, force: true })
  }
})
