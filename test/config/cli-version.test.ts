import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }

test('studiopool --version and -V print the package version and exit 0', () => {
  for (const flag of ['--version', '-V']) {
    const r = spawnSync(process.execPath, [join(ROOT, 'bin/studiopool.js'), flag], { encoding: 'utf8' })
    assert.equal(r.status, 0, r.stderr)
    assert.equal(r.stdout.trim(), pkg.version)
  }
})
