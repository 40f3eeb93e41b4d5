/**
 * A real Jupyter Notebook in a container (the host's Debian jupyter-notebook, bind-mounted /usr),
 * through the docker provider and a real Docker Engine: the kernel runs code over its WebSocket, the
 * per-instance app token is Jupyter's token (a request without it is refused), and a file the kernel
 * writes in the user's home volume is there in the user's next session. No gateway here: the test
 * sends the token as the gateway's upstream header would.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import WebSocket from 'ws'
import { newInstanceId } from '../../src/domain/ids.js'
import { DockerProvider } from '../../src/providers/docker/index.js'
import {
  LABEL_INSTANCE,
  LABEL_OWNER,
  LABEL_POOL,
  LABEL_TEMPLATE,
  type InstanceSpec,
  type OperationOptions,
  type ProviderInstance,
} from '../../src/providers/provider.js'
import { dockerSkipReason, startDockerd, testAppSettings, type TestDockerd } from '../helpers/docker.js'
import { makeTemplate } from '../helpers/template.js'
import { waitFor } from '../helpers/wait.js'
import { printedBy } from '../helpers/jupyter.js'

const skip =
  dockerSkipReason() ??
  (existsSync('/usr/bin/jupyter-notebook')
    ? undefined
    : 'jupyter-notebook is not installed (Debian: jupyter-notebook python3-ipykernel)')
const log = pino({ level: 'silent' })
const op: OperationOptions = { log }
const POOL = 'docker-jupyter-pool'

const template = makeTemplate({
  name: 'jupyter',
  provider: 'docker',
  minFree: 0,
  pathMode: 'keep',
  healthPath: '{{basePath}}api',
  settings: testAppSettings({
    command: [
      'jupyter',
      'notebook',
      '--no-browser',
      '--ip=0.0.0.0',
      '--port=8888',
      '--port-retries=0',
      '--NotebookApp.base_url={{basePath}}',
      '--NotebookApp.token={{appToken}}',
      '--NotebookApp.password=',
      '--NotebookApp.allow_remote_access=True',
      '--NotebookApp.notebook_dir=/home/session',
      '--NotebookApp.quit_button=False',
    ],
    port: 8888,
    memory: '1g',
    home: { volume: 'studiopool-home-{{userSlug}}', mountPath: '/home/session' },
  }),
})

describe('Jupyter in a Docker session (real Docker Engine)', { skip, timeout: 300_000 }, () => {
  let docker: TestDockerd
  let provider: DockerProvider

  before(async () => {
    docker = await startDockerd()
    provider = new DockerProvider({
      poolId: POOL,
      dataDir: '/nonexistent',
      settings: { hosts: [{ name: 'h1', url: docker.url }] },
      log,
    })
    await provider.init(op)
  })

  after(async () => {
    await provider?.close()
    await docker?.stop()
  })

  function spec(userId: string): InstanceSpec & { token: string } {
    const id = newInstanceId()
    const token = randomUUID().replaceAll('-', '')
    return {
      id,
      poolId: POOL,
      template,
      basePath: `/s/${id}/`,
      labels: { [LABEL_POOL]: POOL, [LABEL_INSTANCE]: id, [LABEL_TEMPLATE]: template.name, [LABEL_OWNER]: userId },
      progressUrl: `http://127.0.0.1:9/api/v1/instances/${id}/progress`,
      progressToken: 'progress-token',
      appToken: token,
      ownerId: userId,
      sessionUrl: `http://gateway.test/s/${id}/`,
      token,
    }
  }

  async function jupyterReady(inst: ProviderInstance, s: InstanceSpec, token: string): Promise<string> {
    const base = `${inst.address}${s.basePath}`
    await waitFor(
      `Jupyter to answer at ${base}api`,
      async () =>
        (await fetch(`${base}api`, { headers: { authorization: `token ${token}` }, signal: AbortSignal.timeout(5000) }))
          .ok,
      90_000,
    )
    return base
  }

  it('runs a kernel over its WebSocket, refuses requests without the app token, and keeps files in the home volume', async () => {
    const s = spec('alice')
    const inst = await provider.create(s, op)
    const base = await jupyterReady(inst, s, s.token)
    const auth = { authorization: `token ${s.token}` }

    const anonymous = await fetch(`${base}api/contents`, { redirect: 'manual' })
    assert.ok(anonymous.status === 403 || anonymous.status === 302, `without the app token: ${anonymous.status}`)

    const created = await fetch(`${base}api/kernels`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{"name":"python3"}',
    })
    assert.equal(created.status, 201, await created.clone().text())
    const kernelId = ((await created.json()) as { id: string }).id
    const session = randomUUID()
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}api/kernels/${kernelId}/channels?session_id=${session}`, {
      headers: auth,
    })
    const messages: { msg_type: string; parent_header: { msg_id?: string }; content: Record<string, unknown> }[] = []
    ws.on('message', (data) => messages.push(JSON.parse(data.toString())))
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => reject(new Error(`WebSocket refused: ${res.statusCode}`)))
    })
    try {
      const msgId = randomUUID()
      ws.send(
        JSON.stringify({
          header: {
            msg_id: msgId,
            username: 'test',
            session,
            msg_type: 'execute_request',
            version: '5.3',
            date: new Date().toISOString(),
          },
          parent_header: {},
          metadata: {},
          content: {
            code: "open('/home/session/from-kernel.txt', 'w').write('kept'); print(6*7)",
            silent: false,
            store_history: true,
            user_expressions: {},
            allow_stdin: false,
            stop_on_error: true,
          },
          channel: 'shell',
          buffers: [],
        }),
      )
      const printed = await waitFor('the kernel to print', () => printedBy(messages, msgId), 60_000)
      assert.equal(printed.text, '42\n')
    } finally {
      ws.close()
    }
    await provider.destroy(inst.ref, op)

    // The user's next session (a new instance, a new token) finds the kernel's file.
    const s2 = spec('alice')
    const next = await provider.create(s2, op)
    const base2 = await jupyterReady(next, s2, s2.token)
    const file = await fetch(`${base2}api/contents/from-kernel.txt?content=1`, {
      headers: { authorization: `token ${s2.token}` },
    })
    assert.equal(file.status, 200)
    assert.equal(((await file.json()) as { content: string }).content, 'kept')
    const stale = await fetch(`${base2}api/contents`, {
      headers: { authorization: `token ${s.token}` },
      redirect: 'manual',
    })
    assert.notEqual(stale.status, 200, "the previous session's token does not open the new one")
    await provider.destroy(next.ref, op)
  })
})
