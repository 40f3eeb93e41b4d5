import { lookup } from 'node:dns/promises'
import type { Logger } from 'pino'
import type { SlurmCli, SlurmJob } from './slurm-cli.js'

const NODE_RE = /^[A-Za-z0-9._-]{1,253}$/
const TTL_MS = 5 * 60_000

/**
 * The names and addresses a compute node answers to, as the controller knows it (`scontrol show
 * node`: NodeName, NodeAddr, NodeHostName) and as they resolve here: the only hosts a job on that
 * node may report (issue 12). Cached per node for a few minutes; a failed lookup is not cached.
 */
export class NodeHosts {
  readonly #cli: SlurmCli
  readonly #cache = new Map<string, { at: number; hosts: ReadonlySet<string> }>()
  readonly #inflight = new Map<string, Promise<ReadonlySet<string>>>()

  constructor(cli: SlurmCli) {
    this.#cli = cli
  }

  /** What is known of `node` now (null when not looked up yet: a lookup starts in the background). */
  cached(node: string): ReadonlySet<string> | null {
    const c = this.#cache.get(node)
    if (c && Date.now() - c.at < TTL_MS) return c.hosts
    if (NODE_RE.test(node)) void this.of(node).catch(() => {})
    return null
  }

  async of(node: string): Promise<ReadonlySet<string>> {
    const c = this.#cache.get(node)
    if (c && Date.now() - c.at < TTL_MS) return c.hosts
    if (!NODE_RE.test(node)) return new Set()
    const running = this.#inflight.get(node)
    if (running) return running
    const p = this.#lookup(node).finally(() => this.#inflight.delete(node))
    this.#inflight.set(node, p)
    return p
  }

  async #lookup(node: string): Promise<ReadonlySet<string>> {
    const r = await this.#cli.run('scontrol', ['show', 'node', '--oneliner', node])
    if (r.code !== 0) throw new Error(`scontrol show node ${node}: exit code ${r.code}`)
    const names = new Set([node.toLowerCase()])
    for (const key of ['NodeAddr', 'NodeHostName']) {
      const m = new RegExp(`(?:^|\\s)${key}=(\\S+)`).exec(r.stdout)
      if (m && m[1] !== '(null)') names.add(normalizeHost(m[1]!))
    }
    const hosts = new Set(names)
    for (const n of names)
      try {
        for (const a of await lookup(n, { all: true })) hosts.add(normalizeHost(a.address))
      } catch {
        // a name this machine cannot resolve: only its literal spellings count
      }
    this.#cache.set(node, { at: Date.now(), hosts })
    return hosts
  }
}

/** Lower case, IPv6 brackets dropped. */
export function normalizeHost(host: string): string {
  return host.replace(/^\[(.*)\]$/, '$1').toLowerCase()
}

/** `http://host:port`, an IPv6 literal in brackets. */
export function baseUrl(host: string, port: number): string {
  const h = normalizeHost(host)
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`
}

/** A comment's `http://host:port`: the port within `range`, the host one the node answers to. */
export function commentAddressOk(
  hosts: ReadonlySet<string> | null,
  range: readonly [number, number] | undefined,
  address: string | null,
): boolean {
  if (!address || !range) return false
  const u = new URL(address)
  const port = Number(u.port)
  return port >= range[0] && port <= range[1] && !!hosts?.has(normalizeHost(u.hostname))
}

/**
 * The reported `host:port`'s base URL if the job runs (`job(fresh)` reads squeue, a fresh answer
 * when the last one does not show it running yet: the wrapper reports as soon as the app listens),
 * the port is within `range` and the host is the job's node; else null.
 */
export async function vouchForAddress(a: {
  job: (fresh: boolean) => Promise<SlurmJob | undefined>
  nodes: NodeHosts
  host: string
  port: number
  range: readonly [number, number]
  log: Logger
}): Promise<string | null> {
  if (!Number.isInteger(a.port) || a.port < a.range[0] || a.port > a.range[1]) return null
  let job = await a.job(false)
  if (job?.state !== 'RUNNING') job = await a.job(true)
  if (job?.state !== 'RUNNING') return null
  const node = job.nodes
  const hosts = await a.nodes.of(node).catch((err: unknown) => {
    a.log.warn({ jobId: job.id, node, err: String(err) }, 'slurm: cannot look up the job node')
    return new Set<string>()
  })
  return hosts.has(normalizeHost(a.host)) ? baseUrl(a.host, a.port) : null
}
