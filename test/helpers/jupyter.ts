/**
 * A Jupyter session through the gateway, as a user's browser drives it: the launch URL (cookie),
 * a kernel made over the REST API, code run over the kernel's WebSocket. Shared by the Docker
 * end-to-end tests and the hostile-tenant suites.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import WebSocket from 'ws'
import { CookieJar, http } from '../e2e/harness.js'
import type { ServerProcess } from './server-process.js'
import { waitFor } from './wait.js'

export interface Kernel {
  jar: CookieJar
  base: string
  kernelId: string
}

/** Opens the launch URL (cookie), then starts a kernel through the gateway. */
export async function openJupyter(srv: ServerProcess, launchUrl: string, instanceId: string): Promise<Kernel> {
  const jar = new CookieJar()
  const tree = await http(launchUrl, jar)
  assert.equal(tree.status, 200, tree.text.slice(0, 200))
  const base = `${srv.url}/s/${instanceId}/`
  const created = await http(`${base}api/kernels`, jar, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-xsrftoken': jar.get('_xsrf') ?? '' },
    body: '{"name":"python3"}',
  })
  assert.equal(created.status, 201, created.text.slice(0, 200))
  return { jar, base, kernelId: (JSON.parse(created.text) as { id: string }).id }
}

/** Runs `code` in the kernel over its WebSocket, through the gateway; returns what it printed. */
export async function runInKernel(srv: ServerProcess, k: Kernel, code: string): Promise<string> {
  const session = randomUUID()
  const ws = new WebSocket(`${k.base.replace(/^http/, 'ws')}api/kernels/${k.kernelId}/channels?session_id=${session}`, {
    headers: { origin: new URL(srv.url).origin, cookie: k.jar.header() },
  })
  const out: string[] = []
  let replied = false
  let idle = false
  const msgId = randomUUID()
  ws.on('message', (data: Buffer) => {
    const m = JSON.parse(data.toString()) as {
      msg_type: string
      parent_header: { msg_id?: string }
      content: { text?: string; ename?: string; evalue?: string; execution_state?: string }
    }
    if (m.parent_header.msg_id !== msgId) return
    if (m.msg_type === 'stream' && m.content.text) out.push(m.content.text)
    if (m.msg_type === 'error') out.push(`ERROR ${m.content.ename}: ${m.content.evalue}`)
    // Outputs come on iopub and the reply on shell, in no fixed order; iopub's `idle` for this request
    // comes after all of its outputs. Both, then.
    if (m.msg_type === 'execute_reply') replied = true
    if (m.msg_type === 'status' && m.content.execution_state === 'idle') idle = true
  })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  })
  ws.send(
    JSON.stringify({
      header: {
        msg_id: msgId,
        username: 'u',
        session,
        msg_type: 'execute_request',
        version: '5.3',
        date: new Date().toISOString(),
      },
      parent_header: {},
      metadata: {},
      content: {
        code,
        silent: false,
        store_history: false,
        user_expressions: {},
        allow_stdin: false,
        stop_on_error: true,
      },
      channel: 'shell',
      buffers: [],
    }),
  )
  await waitFor('the kernel to run the code', () => (replied && idle ? true : undefined), 120_000)
  ws.close()
  return out.join('')
}

interface KernelMessage {
  msg_type: string
  parent_header: { msg_id?: string }
  content: Record<string, unknown>
}

/**
 * What a request printed, once the kernel is idle after it (iopub's `idle` follows every output);
 * undefined before. A kernel may split one print into several stream messages ('42', then '\n'),
 * so the texts are joined; `names` are the streams they came on.
 */
export function printedBy(
  messages: readonly KernelMessage[],
  msgId: string,
): { text: string; names: string[] } | undefined {
  const mine = messages.filter((m) => m.parent_header.msg_id === msgId)
  if (!mine.some((m) => m.msg_type === 'status' && m.content.execution_state === 'idle')) return undefined
  const streams = mine.filter((m) => m.msg_type === 'stream')
  return {
    text: streams.map((m) => String(m.content.text ?? '')).join(''),
    names: [...new Set(streams.map((m) => String(m.content.name)))],
  }
}
