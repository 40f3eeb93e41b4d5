/**
 * The shipped examples/studiopool.yaml loads as it is, from any working directory, and names files
 * that exist. Needs no Jupyter, R or browser, so it always runs.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { loadConfig } from '../../src/config/load.js'
import { EXAMPLES } from './harness.js'

const FILE = join(EXAMPLES, 'studiopool.yaml')
const elsewhere = mkdtempSync(join(tmpdir(), 'studiopool-cfg-'))
after(() => rmSync(elsewhere, { recursive: true, force: true }))

test("examples/studiopool.yaml loads from another working directory; {{configDir}} is the file's directory", () => {
  const cfg = loadConfig({ file: FILE, env: {}, cwd: elsewhere })
  assert.deepEqual(
    cfg.templates.map((t) => [t.name, t.provider]),
    [
      ['demo', 'local'],
      ['jupyter', 'local'],
      ['shiny', 'local'],
      ['rstudio', 'local'],
      ['rstudio-ec2', 'ec2'],
    ],
  )
  const t = Object.fromEntries(cfg.templates.map((x) => [x.name, x]))
  const command = (name: string) => t[name]!.settings.command as string[]

  assert.ok(existsSync(command('demo')[1]!), `demo app at ${command('demo')[1]}`)
  const shinyExpr = command('shiny')[2]!
  assert.ok(shinyExpr.includes(`runApp('${EXAMPLES}/shiny/app'`), shinyExpr)
  assert.ok(existsSync(join(EXAMPLES, 'shiny/app/app.R')))
  assert.equal(t['rstudio-ec2']!.settings.userDataTemplate, join(EXAMPLES, 'rstudio/user-data.sh'))
  assert.ok(existsSync(t['rstudio-ec2']!.settings.userDataTemplate as string))

  // Jupyter keeps the prefix, sees the gateway's Host and is probed under its base path.
  assert.equal(t.jupyter!.pathMode, 'keep')
  assert.equal(t.jupyter!.hostHeader, 'preserve')
  assert.equal(t.jupyter!.healthPath, '{{basePath}}api')
  assert.ok(command('jupyter').includes('--NotebookApp.base_url={{basePath}}'))
  // Jupyter checks the per-instance app token, which the gateway sends on every request (issue 8).
  assert.ok(!command('jupyter').some((a) => a.startsWith('--NotebookApp.token')), 'no "no token" flag')
  assert.equal((t.jupyter!.settings.env as Record<string, string>).JUPYTER_TOKEN, '{{appToken}}')
  assert.deepEqual(t.jupyter!.upstreamHeaders, { Authorization: 'token {{appToken}}' })
  // Shiny and RStudio run as if at /.
  assert.equal(t.shiny!.pathMode, 'strip')
  assert.equal(t.rstudio!.pathMode, 'strip')
  assert.equal(t['rstudio-ec2']!.pathMode, 'strip')
  assert.ok(command('rstudio').includes('--auth-none=1'))
})

test('every key of examples/studiopool.yaml is documented by a comment on its line or the line above', () => {
  const lines = readFileSync(FILE, 'utf8').split('\n')
  const bare: string[] = []
  lines.forEach((line, i) => {
    if (!/^\s*-?\s*[A-Za-z][A-Za-z0-9_-]*:(\s|$)/.test(line) || line.includes('#')) return
    const prev = lines[i - 1]?.trim() ?? ''
    if (prev.startsWith('#')) return
    // `description:` documents itself (and is documented on the first template).
    if (/^\s*description:/.test(line)) return
    bare.push(`${i + 1}: ${line.trim()}`)
  })
  assert.deepEqual(bare, [])
})

test('a relative healthPath that is neither /… nor {{basePath}}… is refused', () => {
  assert.throws(
    () =>
      loadConfig({
        text: 'templates:\n  x:\n    healthPath: api\n    local: { command: [node] }\n',
        env: {},
        cwd: elsewhere,
      }),
    (err: Error & { problems?: { path: string }[] }) =>
      err.problems?.some((p) => p.path === '/templates/x/healthPath') === true,
  )
})
