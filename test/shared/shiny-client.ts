/**
 * A Shiny user without a browser: loads the app page through the gateway (following the progress
 * page until the app answers), then speaks Shiny's WebSocket protocol (`/websocket/`: a `config`
 * message, then `init` with the inputs, `update` per change, `values` back) with the same cookies.
 */
import { request } from 'undici'
import WebSocket from 'ws'
import { waitFor } from '../helpers/wait.js'

export class ShinyUser {
  readonly cookies = new Map<string, string>()
  readonly values: Record<string, string>[] = []
  ws: WebSocket | undefined
  pid: string | undefined
  /** The socket closed without us closing it: the user was cut off. */
  cutOff = false
  sawProgressPage = false
  #closing = false

  constructor(
    readonly base: string,
    readonly path: string,
    readonly userId: string,
    sessionCookie: string,
  ) {
    const [k, v] = sessionCookie.split('=', 2) as [string, string]
    this.cookies.set(k, v)
  }

  get cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ')
  }

  sticky(): string | undefined {
    return this.cookies.get('studiopool_session_a')
  }

  /** GET the app's page until it is the app (the progress page refreshes itself: so do we). */
  async load(timeoutMs = 60_000): Promise<void> {
    await waitFor(
      `the Shiny page for ${this.userId}`,
      async () => {
        const res = await request(`${this.base}${this.path}`, {
          headers: { cookie: this.cookieHeader, accept: 'text/html' },
        })
        for (const c of ([] as string[]).concat(res.headers['set-cookie'] ?? [])) {
          const pair = c.split(';', 1)[0]!
          const eq = pair.indexOf('=')
          this.cookies.set(pair.slice(0, eq), pair.slice(eq + 1))
        }
        const text = await res.body.text()
        if (res.statusCode === 503 && text.includes('is starting')) {
          this.sawProgressPage = true
          return false
        }
        if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${text.slice(0, 200)}`)
        return text.includes('shiny') && text.includes('id="n"')
      },
      timeoutMs,
      250,
    )
  }

  /** Opens the session's WebSocket with input n; resolves once the outputs arrived. */
  async connect(n: number, timeoutMs = 30_000): Promise<void> {
    const wsUrl = `${this.base.replace(/^http/, 'ws')}${this.path}websocket/`
    const ws = new WebSocket(wsUrl, { headers: { cookie: this.cookieHeader, origin: this.base } })
    this.ws = ws
    this.#closing = false
    this.values.length = 0
    ws.on('message', (m) => {
      const msg = JSON.parse(String(m)) as { values?: Record<string, string> }
      if (msg.values && Object.keys(msg.values).length) this.values.push(msg.values)
    })
    ws.on('close', () => {
      if (!this.#closing) this.cutOff = true
    })
    ws.on('error', () => {})
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('unexpected-response', (_req, res) => reject(new Error(`WebSocket refused: ${res.statusCode}`)))
      ws.once('error', reject)
    })
    ws.send(
      JSON.stringify({
        method: 'init',
        data: { n, '.clientdata_output_out_hidden': false, '.clientdata_output_pid_hidden': false },
      }),
    )
    await this.#expect('out', `square:${n * n}`, timeoutMs)
    this.pid = this.#latest('pid')
  }

  /** Changes input n; resolves when this user's output says n². */
  async set(n: number, timeoutMs = 15_000): Promise<void> {
    this.ws!.send(JSON.stringify({ method: 'update', data: { n } }))
    await this.#expect('out', `square:${n * n}`, timeoutMs)
  }

  async leave(): Promise<void> {
    const ws = this.ws
    if (!ws) return
    this.#closing = true
    if (ws.readyState === WebSocket.CLOSED) return
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve())
      ws.close()
    })
  }

  #latest(key: string): string | undefined {
    for (let i = this.values.length - 1; i >= 0; i--)
      if (this.values[i]![key] !== undefined) return this.values[i]![key]
    return undefined
  }

  #expect(key: string, value: string, timeoutMs: number): Promise<unknown> {
    return waitFor(
      `${this.userId}'s ${key} to be ${value}`,
      () => {
        if (this.cutOff) throw new Error(`${this.userId}'s WebSocket was closed`)
        return this.#latest(key) === value
      },
      timeoutMs,
    )
  }
}
