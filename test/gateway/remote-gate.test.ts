/**
 * The split-mode gateway's gate for shared templates (src/gateway/remote-gate.ts): hard budgets from
 * the API's snapshot, matched by user, group, template or pool; the last snapshot stands while the
 * API fails; schedules decided locally; no polling without a hard budget.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import pino from 'pino'
import { loadConfig } from '../../src/config/load.js'
import { createRemoteSharedGate } from '../../src/gateway/remote-gate.js'
import { waitFor } from '../helpers/wait.js'

const KEY = 'remote-gate-proxy-key-0123456789'
const YAML = (budgets: string) => `
worker: { interval: 500ms }
templates:
  app: { mode: shared, provider: fake }
  other: { mode: shared, provider: fake }
  mine: { provider: fake }
budgets:
${budgets}
`

describe('split-mode shared gate', () => {
  let api: Server
  let url: string
  let answer: { status: number; body: unknown } = { status: 200, body: { budgets: [] } }
  let calls = 0

  before(async () => {
    api = createServer((req, res) => {
      calls++
      if (req.headers.authorization !== `Bearer ${KEY}` || req.url !== '/api/v1/gateway/shared-gate') {
        res.writeHead(401).end()
        return
      }
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(JSON.stringify(answer.body))
    })
    await new Promise<void>((r) => api.listen(0, '127.0.0.1', r))
    url = `http://127.0.0.1:${(api.address() as AddressInfo).port}`
  })
  after(() => new Promise<void>((r) => api.close(() => r())))

  test('refuses whom an exceeded hard budget covers, and keeps the last snapshot while the API fails', async () => {
    const config = loadConfig({ text: YAML('  - { scope: group, name: students, amount: 1, mode: hard }'), env: {} })
    answer = {
      status: 200,
      body: {
        budgets: [
          { scope: 'group', key: 'students', message: 'budget "students" is exceeded' },
          { scope: 'template', key: 'other', message: 'budget "other" is exceeded' },
          { scope: 'no-such-scope', key: 'x', message: 'ignored' },
        ],
      },
    }
    const gate = createRemoteSharedGate({ serviceUrl: url, key: KEY, log: pino({ level: 'silent' }), config })
    try {
      await gate.ready()
      assert.deepEqual(gate.admit('app', 'sam', ['students']), {
        status: 403,
        code: 'BUDGET_EXCEEDED',
        message: 'budget "students" is exceeded',
      })
      assert.equal(gate.admit('app', 'tea', ['staff']), null, 'not in the group')
      assert.equal(gate.admit('other', 'tea', ['staff'])?.code, 'BUDGET_EXCEEDED', 'the template is covered')
      assert.equal(gate.admit('mine', 'sam', ['students']), null, 'not a shared template: not this gate')
      answer = { status: 500, body: {} }
      const before = calls
      await waitFor('a failed poll', () => calls > before + 1)
      assert.equal(gate.admit('app', 'sam', ['students'])?.code, 'BUDGET_EXCEEDED', 'the last snapshot stands')
      answer = { status: 200, body: { budgets: [] } }
      await waitFor('the cleared snapshot', () => gate.admit('app', 'sam', ['students']) === null)
    } finally {
      gate.close()
    }
  })

  test('without a hard budget it never asks the API', async () => {
    const config = loadConfig({ text: YAML('  - { scope: pool, amount: 1, mode: soft }'), env: {} })
    const before = calls
    const gate = createRemoteSharedGate({ serviceUrl: url, key: KEY, log: pino({ level: 'silent' }), config })
    await gate.ready()
    assert.equal(gate.admit('app', 'sam', ['students']), null)
    gate.close()
    assert.equal(calls, before)
  })
})
