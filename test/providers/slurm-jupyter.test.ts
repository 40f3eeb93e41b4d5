/**
 * End to end on Slurm: the real server (`start()`) with a Jupyter template on the slurm provider and
 * a private single-node cluster. The notebook runs as a batch job (as `nobody`), reports its
 * host:port (through the job comment here: the example's instanceCallbackUrl is not this server), and a kernel runs code over its WebSocket through the gateway.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { pino } from 'pino'
import { request } from 'undici'
import WebSocket from 'ws'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { loadConfig } from '../../src/config/load.js'
import { start, type Running } from '../../src/main.js'
import { CookieJar, EXAMPLES, http } from '../e2e/harness.js'
import { SLURM_TEST_USER, slurmSkipReason, startSlurm, type TestSlurm } from '../helpers/slurm.js'
import { waitFor } from '../helpers/wait.js'
import { printedBy } from '../helpers/jupyter.js'

const skip =
  slurmSkipReason() ??
  (existsSync('/usr/bin/jupyter-notebook')
    ? null
    : 'jupyter-notebook is not installed (Debian: jupyter-notebook python3-ipykernel)')

const SCRIPT = [
  'export HOME=/tmp/studiopool-jupyter-{{instanceId}}',
  'mkdir -p "$HOME" && cd "$HOME"',
  'export JUPYTER_TOKEN="{{appToken}}"',
  'exec /usr/bin/jupyter-notebook --no-browser --ip={{host}} --port={{port}} --port-retries=0' +
    ' --NotebookApp.base_url={{basePath}} --NotebookApp.token="{{appToken}}" --NotebookApp.password=' +
    ' --NotebookApp.allow_remote_access=True --NotebookApp.quit_button=False',
].join('\n')

describe('Jupyter on Slurm through the gateway', { skip: skip ?? undefined, timeout: 300_000 }, () => {
  let slurm: TestSlurm
  let running: Running
  let adminKey = ''
  let dataDir: string
  const homes: string[] = []

  before(async () => {
    slurm = await startSlurm({ cpus: 2 })
    dataDir = mkdtempSync(join(tmpdir(), 'studiopool-slurm-e2e-'))
    const doc = parseYaml(readFileSync(join(EXAMPLES, 'studiopool.yaml'), 'utf8')) as Record<string, unknown>
    doc.worker = { ...(doc.worker as object), interval: '500ms' }
    doc.pool = { ...(doc.pool as object), defaultTemplate: 'jupyter' }
    doc.providers = { slurm: { env: slurm.env, pollInterval: 300, runAs: 'uid' } }
    doc.templates = {
      jupyter: {
        provider: 'slurm',
        minFree: 0,
        startTimeout: '2m',
        pathMode: 'keep',
        hostHeader: 'preserve',
        healthPath: '{{basePath}}api',
        upstreamHeaders: { Authorization: 'token {{appToken}}' },
        slurm: { user: SLURM_TEST_USER, hostCommand: 'echo 127.0.0.1', script: SCRIPT },
      },
    }
    const config = loadConfig({ text: stringifyYaml(doc), env: {}, cwd: EXAMPLES, overrides: { port: 0, dataDir } })
    running = await start({ config, log: pino({ level: 'silent' }), onBootstrapKey: (k) => (adminKey = k) })
  })
  after(async () => {
    await running?.close()
    await slurm?.stop()
    if (dataDir) rmSync(dataDir, { recursive: true, force: true })
    for (const h of homes) rmSync(h, { recursive: true, force: true })
  })

  async function command<T>(name: string, payload: Record<string, unknown>): Promise<{ status: number; body: T }> {
    const res = await request(`${running.url}/api/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: name, payload }),
    })
    return { status: res.statusCode, body: (await res.body.json()) as T }
  }

  it('a kernel runs print(6*7) over its WebSocket through the gateway', async () => {
    const r = await command<{ instanceId: string; url: string }>('REQUEST_SESSION', {
      userId: 'alice',
      template: 'jupyter',
    })
    assert.equal(r.status, 200, JSON.stringify(r.body))
    const { instanceId, url } = r.body
    homes.push(`/tmp/studiopool-jupyter-${instanceId}`)
    await waitFor(
      'the Jupyter job to be ready',
      async () => {
        const st = await command<{ instance: { state: string; failureReason: string | null } }>('GET_STATUS', {
          instanceId,
          userId: 'alice',
        })
        if (st.body.instance.state === 'failed') throw new Error(`failed: ${st.body.instance.failureReason}`)
        return st.body.instance.state === 'ready'
      },
      120_000,
    )
    const inst = (await running.store!.getInstance(instanceId))!
    const job = slurm.cmd('/usr/bin/squeue', ['-h', '-j', inst.providerRef!, '-o', '%u %T']).stdout.trim()
    assert.equal(job, `${SLURM_TEST_USER} RUNNING`)

    const jar = new CookieJar()
    const base = `${running.url}/s/${instanceId}/`
    const tree = await http(url, jar)
    assert.equal(tree.status, 200, tree.text.slice(0, 300))
    const xsrf = jar.get('_xsrf')
    assert.ok(xsrf)
    // Straight to the compute node's port, without the gateway's token: refused.
    const direct = await fetch(`${inst.address}/s/${instanceId}/api/kernels`, { redirect: 'manual' })
    assert.equal(direct.status, 403)
    await direct.arrayBuffer()
    const created = await http(`${base}api/kernels`, jar, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-xsrftoken': xsrf },
      body: '{"name":"python3"}',
    })
    assert.equal(created.status, 201, created.text.slice(0, 300))
    const kernelId = (JSON.parse(created.text) as { id: string }).id
    const session = randomUUID()
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}api/kernels/${kernelId}/channels?session_id=${session}`, {
      headers: { origin: new URL(running.url).origin, cookie: jar.header() },
    })
    const messages: { msg_type: string; parent_header: { msg_id?: string }; content: Record<string, unknown> }[] = []
    ws.on('message', (data: Buffer) => messages.push(JSON.parse(data.toString()) as (typeof messages)[number]))
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => reject(new Error(`WebSocket refused: ${res.statusCode}`)))
    })
    const msgId = randomUUID()
    ws.send(
      JSON.stringify({
        header: {
          msg_id: msgId,
          username: 't',
          session,
          msg_type: 'execute_request',
          version: '5.3',
          date: new Date().toISOString(),
        },
        parent_header: {},
        metadata: {},
        content: {
          code: 'print(6*7)',
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
    const printed = await waitFor('the kernel to answer', () => printedBy(messages, msgId), 60_000)
    assert.equal(printed.text, '42\n')
    ws.close()
    const released = await command('DELETE', { instanceId, userId: 'alice' })
    assert.equal(released.status, 200, JSON.stringify(released.body))
    await waitFor(
      'the job to be cancelled on release',
      () =>
        slurm.cmd('/usr/bin/squeue', ['-h', '-j', inst.providerRef!, '-t', 'PD,R,S', '-o', '%i']).stdout.trim() === '',
      60_000,
    )
  })
})
