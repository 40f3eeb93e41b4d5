// Nothing outside src/store/ knows which dialect runs (issue 10). eslint.config.js forbids reading
// `.dialect` there (no-restricted-syntax, checked in CI with the rest of the lint); this test is the
// quick version of the same check, over the source as it stands.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : /\.(ts|mts|js|mjs)$/.test(e.name) ? [join(dir, e.name)] : [],
  )
}

test('no code outside src/store/ reads the store dialect', () => {
  const offenders = sources('src')
    .filter((f) => !f.startsWith(join('src', 'store')))
    .flatMap((f) =>
      readFileSync(f, 'utf8')
        .split('\n')
        .map((line, i) => ({ f, n: i + 1, line }))
        .filter(({ line }) => /\.dialect\b|\bdialect\s*(===|!==)/.test(line)),
    )
    .map(({ f, n, line }) => `${f}:${n}: ${line.trim()}`)
  assert.deepEqual(offenders, [])
})

test('the lint rule that holds it is configured for src/ outside src/store/', () => {
  const config = readFileSync('eslint.config.js', 'utf8')
  assert.match(config, /MemberExpression\[property\.name='dialect'\]/)
  assert.match(config, /ignores: \['src\/store\/\*\*'\]/)
})
