/**
 * The real studiopool server (`studiopool serve`, test/helpers/server-process.ts) with templates on
 * the docker provider against a private dockerd (test/helpers/docker.ts), and what the Docker
 * end-to-end, hostile-tenant and bench runs do through it: request a session through the API,
 * open it through the gateway (launch URL → cookie), run code in a Jupyter kernel over the
 * gateway's WebSocket.
 */
import assert from 'node:assert/strict'
import { existsSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import WebSocket from 'ws'
import { stringify as stringifyYaml } from 'yaml'
import { CookieJar, http } from '../e2e/harness.js'
import { waitFor } from './wait.js'
import { DEMO_APP, REPO, api, type ServerProcess } from './server-process.js'
import { TEST_IMAGE, TEST_USER } from './docker.js'

export const JUPYTER_INSTALLED = existsSync('/usr/bin/jupyter-notebook')

const usrMount = { type: 'bind', source: '/usr', target: '/usr', readOnly: true }

/**
 * The shipped demo app in the test image: the app's folder and `ws` bind-mounted read-only, side by
 * side (a mount inside a read-only bind mount cannot be made), so that `import 'ws'` resolves.
 */
export function demoDocker(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    image: TEST_IMAGE,
    command: ['node', '/app/demo/server.mjs', '--host', '0.0.0.0', '--port', '8000', '--base-path', '{{basePath}}'],
    port: 8000,
    user: TEST_USER,
    env: { HOME: '/home/session' },
    mounts: [
      usrMount,
      { type: 'bind', source: join(REPO, 'src/demo-app'), target: '/app/demo', readOnly: true },
      {
        type: 'bind',
        source: realpathSync(join(REPO, 'node_modules/ws')),
        target: '/app/node_modules/ws',
        readOnly: true,
      },
    ],
    pullPolicy: 'never',
    stopGrace: '3s',
    memory: '256m',
    ...extra,
  }
}

/** The host's Jupyter Notebook in the test image, the app token as Jupyter's token, a home volume. */
export function jupyterDocker(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    image: TEST_IMAGE,
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
    user: TEST_USER,
    env: { HOME: '/home/session' },
    mounts: [usrMount],
    pullPolicy: 'never',
    stopGrace: '3s',
    memory: '1g',
    home: { volume: 'studiopool-home-{{userSlug}}', mountPath: '/home/session' },
    ...extra,
  }
}

/** Template keys of a Jupyter template behind the gateway (as in examples/studiopool.yaml). */
export const JUPYTER_TEMPLATE = {
  provider: 'docker',
  minFree: 0,
  maxInstances: 10,
  startTimeout: '90s',
  pathMode: 'keep',
  hostHeader: 'preserve',
  healthPath: '{{basePath}}api',
  upstreamHeaders: { Authorization: 'token {{appToken}}' },
}

export const DEMO_TEMPLATE = {
  provider: 'docker',
  minFree: 0,
  maxInstances: 30,
  startTimeout: '60s',
  pathMode: 'strip',
  healthPath: '/healthz',
}

/** A whole configuration: one pool, the given docker hosts and templates, a fast worker. */
export function dockerServerConfig(o: {
  poolId: string
  hosts: Record<string, unknown>[]
  templates: Record<string, Record<string, unknown>>
  defaultTemplate?: string
  worker?: Record<string, unknown>
  providerExtra?: Record<string, unknown>
}): string {
  return stringifyYaml({
    server: { host: '127.0.0.1', dataDir: './data', logLevel: 'warn' },
    auth: { mode: 'keys', bootstrapAdmin: true },
    store: { driver: 'sqlite' },
    pool: { id: o.poolId, maxInstances: 40, defaultTemplate: o.defaultTemplate ?? Object.keys(o.templates)[0] },
    worker: { interval: '500ms', orphanGrace: '5s', ...o.worker },
    dashboard: { login: 'dev', admins: ['admin'] },
    providers: { docker: { hosts: o.hosts, requestTimeout: '20s', downBackoff: '500ms', ...o.providerExtra } },
    templates: o.templates,
  })
}

export interface InstanceStatus {
  instanceId: string
  state: string
  url: string
  progress: number
  progressMessage: string
  failureReason: string | null
}

export async function status(
  srv: ServerProcess,
  key: string,
  instanceId: string,
  userId: string,
): Promise<InstanceStatus> {
  const st = await api<{ instance: InstanceStatus }>(srv.url, key, 'POST', '/api/commands', {
    command: 'GET_STATUS',
    payload: { instanceId, userId },
  })
  assert.equal(st.status, 200, JSON.stringify(st.body))
  return st.body.instance
}

/** REQUEST_SESSION, then waits until the instance is ready; returns its id and launch URL. */
export async function requestReady(
  srv: ServerProcess,
  key: string,
  userId: string,
  template: string,
  timeoutMs = 120_000,
): Promise<{ instanceId: string; url: string }> {
  const r = await api<{ instanceId: string; url: string }>(srv.url, key, 'POST', '/api/commands', {
    command: 'REQUEST_SESSION',
    payload: { userId, template },
  })
  assert.equal(r.status, 200, JSON.stringify(r.body))
  await waitReady(srv, key, r.body.instanceId, userId, timeoutMs)
  return r.body
}

export async function waitReady(
  srv: ServerProcess,
  key: string,
  instanceId: string,
  userId: string,
  timeoutMs = 120_000,
): Promise<InstanceStatus> {
  return waitFor(
    `${instanceId} for ${userId} to be ready`,
    async () => {
      const st = await status(srv, key, instanceId, userId)
      if (st.state === 'failed') throw new Error(`failed: ${st.failureReason}`)
      return st.state === 'ready' ? st : undefined
    },
    timeoutMs,
  )
}

export { openJupyter, runInKernel, type Kernel } from './jupyter.js'

/** Opens a demo session through the gateway: the page, then a WebSocket echo. */
export async function useDemo(
  srv: ServerProcess,
  launchUrl: string,
  instanceId: string,
): Promise<{ page: string; echo: string }> {
  const jar = new CookieJar()
  const page = await http(launchUrl, jar)
  assert.equal(page.status, 200, page.text.slice(0, 200))
  const ws = new WebSocket(`${srv.url.replace(/^http/, 'ws')}/s/${instanceId}/ws`, {
    headers: { origin: new URL(srv.url).origin, cookie: jar.header() },
  })
  const echo = await new Promise<string>((resolve, reject) => {
    ws.once('open', () => ws.send('hello through the gateway'))
    ws.on('message', (d: Buffer) => {
      const text = d.toString()
      if (text.includes('hello through the gateway')) resolve(text)
    })
    ws.once('error', reject)
  })
  ws.close()
  return { page: page.text, echo }
}

export { DEMO_APP }
