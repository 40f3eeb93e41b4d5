/**
 * Issue 10: no instance-state write outside the pool. eslint.config.js holds the rule; this proves
 * it bites where it must (the API, the worker, the dashboard, main.ts) and lets the pool's own writes
 * through; CI's lint step (`npx eslint .`) holds the repository to it.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ESLint } from 'eslint'

const eslint = new ESLint({ cwd: process.cwd() })
const RULE = 'no-restricted-syntax'

async function restricted(filePath: string, code: string): Promise<string[]> {
  const [r] = await eslint.lintText(code, { filePath })
  return r!.messages.filter((m) => m.ruleId === RULE).map((m) => m.message)
}

const write = `import type { Store } from '../store/store.js'
export async function sneak(store: Store): Promise<void> {
  await store.updateInstance('x', { state: 'terminated' }, { states: ['ready'] })
}
`

test('a store write of instance state outside the pool is a lint error', async () => {
  for (const file of ['src/api/context.ts', 'src/web/session.ts', 'src/pool/worker.ts', 'src/main.ts']) {
    const found = await restricted(file, write.replace('../store/', file === 'src/main.ts' ? './store/' : '../store/'))
    assert.equal(found.length, 1, `${file}: ${JSON.stringify(found)}`)
    assert.match(found[0]!, /written by the pool only/)
  }
})

test('inside the pool, instance state is written as a named transition (PoolCore.apply) only', async () => {
  const found = await restricted('src/pool/pool-request.ts', write)
  assert.equal(found.length, 1)
  assert.match(found[0]!, /named transition/)
  assert.deepEqual(await restricted('src/pool/pool-core.ts', write), [])
})
