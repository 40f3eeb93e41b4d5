import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from './helpers.js'

test('GET_STATUS {} is never older than a change made through this server, though lists are cached between changes', async () => {
  const server = await startServer(
    'sqlite',
    `worker: { enabled: false }\ntemplates:\n  demo: { provider: fake, minFree: 0, fake: { address: 'http://127.0.0.1:9' } }\n`,
    { PROXY_KEY: 'proxy-key-0123456789' },
  )
  after(() => server.close())
  const { running, adminKey } = server
  const cmd = async (key: string, command: string, payload: object) => {
    const r = await running.app!.inject({
      method: 'POST',
      url: '/api/commands',
      headers: { authorization: `Bearer ${key}` },
      payload: { command, payload },
    })
    assert.equal(r.statusCode, 200, r.body)
    return r.json()
  }
  const list = async () => ((await cmd('proxy-key-0123456789', 'GET_STATUS', {})).instances as string[]).sort()
  assert.deepEqual(await list(), [])
  assert.deepEqual(await list(), [], 'served again (from the cache)')
  const a = await cmd(adminKey, 'REQUEST_SESSION', { userId: 'a' })
  assert.deepEqual(await list(), [a.instanceId], 'a new assignment shows at once')
  const b = await cmd(adminKey, 'REQUEST_SESSION', { userId: 'b' })
  assert.deepEqual(await list(), [a.instanceId, b.instanceId].sort())
  await cmd(adminKey, 'DELETE', { instanceId: a.instanceId })
  assert.deepEqual(await list(), [b.instanceId], 'a release shows at once')
  // A change that bypasses this process (another replica, a separate worker) shows within a second.
  await running.store!.updateInstance(b.instanceId, { state: 'terminated', endedAt: Date.now() })
  const deadline = Date.now() + 3000
  let now = await list()
  while (now.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100))
    now = await list()
  }
  assert.deepEqual(now, [], 'a change from elsewhere shows within the cache time')
})
