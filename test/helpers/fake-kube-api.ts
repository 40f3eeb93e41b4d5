/**
 * An in-process fake Kubernetes API server at the HTTP wire level (issue 15): no API server or
 * kubelet can run on these machines, so the kubernetes provider's tests point the official client
 * (@kubernetes/client-node) at this server through a kubeconfig file, and the client talks to it
 * unchanged. HTTPS on 127.0.0.1, port 0, with a certificate made for the run (openssl) that the
 * kubeconfig names as its certificate authority, as a real cluster's does; `tls: false` for plain HTTP.
 *
 * What it serves, as the real API server does: create, get, list, watch, patch (merge, strategic
 * merge as a merge, JSON patch) and delete of pods, persistent volume claims, network policies,
 * events and services in namespaces (and replace, a PUT with optimistic concurrency); one resourceVersion counter across kinds; list with label and
 * field selectors; watch from a resourceVersion with the events since then, `allowWatchBookmarks`
 * BOOKMARK events, an ERROR event with a `410 Gone` Status for a resourceVersion older than the
 * compacted history; `409 AlreadyExists`, `404 NotFound`, `409 Conflict` on a failed uid
 * precondition, graceful pod deletion when asked (`podDeleteMs`), `422 Invalid` with a `Status` body (causes per field) for an object the OpenAPI
 * schema of Kubernetes 1.36 refuses (test/helpers/kube-openapi.ts) or with a label Kubernetes refuses;
 * a bearer token is required.
 *
 * Test hooks play the kubelet, the scheduler and the network: run a pod, make it unschedulable,
 * evict it, OOM-kill it, lose its node, delete it behind the provider's back, post events, drop
 * every watch, compact the history, refuse every connection for a while.
 */
import { execFileSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { tmpdir } from 'node:os'
import type { AddressInfo, Socket } from 'node:net'
import { join } from 'node:path'
import { kubeSchemaProblems } from './kube-openapi.js'

type Obj = Record<string, any>

interface Kind {
  readonly resource: string
  readonly kind: string
  readonly apiVersion: string
  readonly prefix: string
}

const KINDS: readonly Kind[] = [
  { resource: 'pods', kind: 'Pod', apiVersion: 'v1', prefix: '/api/v1' },
  { resource: 'persistentvolumeclaims', kind: 'PersistentVolumeClaim', apiVersion: 'v1', prefix: '/api/v1' },
  { resource: 'events', kind: 'Event', apiVersion: 'v1', prefix: '/api/v1' },
  { resource: 'services', kind: 'Service', apiVersion: 'v1', prefix: '/api/v1' },
  {
    resource: 'networkpolicies',
    kind: 'NetworkPolicy',
    apiVersion: 'networking.k8s.io/v1',
    prefix: '/apis/networking.k8s.io/v1',
  },
]

interface WatchEvent {
  readonly rv: number
  readonly resource: string
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED'
  readonly obj: Obj
}

interface Watcher {
  readonly resource: string
  readonly ns: string
  readonly match: (o: Obj) => boolean
  readonly res: ServerResponse
  readonly bookmarks: boolean
}

export interface RecordedRequest {
  readonly method: string
  readonly resource: string
  readonly name: string | null
  readonly watch: boolean
  readonly query: string
  /** The HTTP status answered (200 for a watch). */
  status: number
}

export interface FakeKubeOptions {
  /** Pods are run (scheduled, Running, Ready) as soon as they are created. Default true. */
  autoRun?: boolean
  /** The IP running pods get. Default 127.0.0.1 (the tests' app stub listens there). */
  podIp?: string
  /** BOOKMARK interval on watches that ask for them. Default 200 ms. */
  bookmarkMs?: number
  /**
   * Graceful pod deletion as the kubelet does it: a DELETE with a grace period marks the pod
   * (deletionTimestamp, MODIFIED) and it is removed this many ms later. Default 0: removed at once.
   */
  podDeleteMs?: number
  token?: string
  /** HTTPS with a fresh self-signed certificate (default true), or plain HTTP. */
  tls?: boolean
}

/** A key and a self-signed certificate for 127.0.0.1, made with openssl for this run. */
function makeCertificate(): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fake-kube-tls-'))
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=fake-kube-api',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    )
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const clone = <T>(v: T): T => structuredClone(v)

function status(code: number, reason: string, message: string, details?: Obj): Obj {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code, details }
}

const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/
const LABEL_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

/** What the API server's own validation adds to the schema: names and labels. */
function metaProblems(o: Obj): { field: string; message: string }[] {
  const out: { field: string; message: string }[] = []
  const name = o.metadata?.name
  if (typeof name !== 'string' || !DNS_SUBDOMAIN.test(name) || name.length > 253)
    out.push({ field: 'metadata.name', message: `Invalid value: ${JSON.stringify(name)}: a DNS-1123 subdomain` })
  for (const [k, v] of Object.entries((o.metadata?.labels ?? {}) as Record<string, unknown>)) {
    if (!LABEL_NAME.test(k) || k.split('/').pop()!.length > 63)
      out.push({ field: `metadata.labels`, message: `Invalid value: ${JSON.stringify(k)}: a label key` })
    if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v))
      out.push({ field: `metadata.labels`, message: `Invalid value: ${JSON.stringify(v)}: a label value` })
  }
  return out
}

function labelMatcher(selector: string | null): (o: Obj) => boolean {
  if (!selector) return () => true
  const tests = selector.split(',').map((term): ((l: Record<string, string>) => boolean) => {
    const t = term.trim()
    let m: RegExpMatchArray | null
    if ((m = t.match(/^([^!=]+)!=(.*)$/))) return (l) => l[m![1]!] !== m![2]
    if ((m = t.match(/^([^!=]+)==?(.*)$/))) return (l) => l[m![1]!] === m![2]
    if ((m = t.match(/^!(.+)$/))) return (l) => !(m![1]! in l)
    if (/^[^\s!=()]+$/.test(t)) return (l) => t in l
    throw new Error(`unable to parse requirement: ${t}`)
  })
  return (o) => tests.every((f) => f((o.metadata?.labels ?? {}) as Record<string, string>))
}

function fieldMatcher(selector: string | null): (o: Obj) => boolean {
  if (!selector) return () => true
  const tests = selector.split(',').map((term) => {
    const m = term.match(/^([\w.]+)(!=|==|=)(.*)$/)
    if (!m) throw new Error(`invalid field selector: ${term}`)
    const get = (o: Obj) => m[1]!.split('.').reduce<any>((v, k) => v?.[k], o)
    return m[2] === '!=' ? (o: Obj) => String(get(o) ?? '') !== m[3] : (o: Obj) => String(get(o) ?? '') === m[3]
  })
  return (o) => tests.every((f) => f(o))
}

/** RFC 7386 JSON merge patch (also used for strategic merge patches: maps merge, lists are replaced). */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!patch || typeof patch !== 'object' || Array.isArray(patch)) return clone(patch)
  const out: Obj = target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Obj) } : {}
  for (const [k, v] of Object.entries(patch as Obj)) {
    if (v === null) delete out[k]
    else out[k] = mergePatch(out[k], v)
  }
  return out
}

/** RFC 6902 JSON patch: add, replace, remove, test. */
function jsonPatch(target: Obj, ops: readonly Obj[]): Obj {
  const doc = clone(target)
  for (const op of ops) {
    const parts = String(op.path)
      .split('/')
      .slice(1)
      .map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'))
    const last = parts.pop()!
    const parent = parts.reduce<any>((v, k) => v?.[k], doc)
    if (parent === undefined || parent === null) throw new Error(`path ${op.path} does not exist`)
    switch (op.op) {
      case 'add':
      case 'replace':
        if (Array.isArray(parent))
          parent.splice(last === '-' ? parent.length : Number(last), op.op === 'add' ? 0 : 1, op.value)
        else parent[last] = op.value
        break
      case 'remove':
        if (Array.isArray(parent)) parent.splice(Number(last), 1)
        else delete parent[last]
        break
      case 'test':
        if (JSON.stringify(parent[last]) !== JSON.stringify(op.value)) throw new Error(`test failed at ${op.path}`)
        break
      default:
        throw new Error(`unsupported op ${String(op.op)}`)
    }
  }
  return doc
}

export class FakeKubeApi {
  readonly token: string
  readonly requests: RecordedRequest[] = []
  /** Every object accepted by a create or a patch (after the patch), as stored. */
  readonly accepted: Obj[] = []
  readonly #opts: Required<Omit<FakeKubeOptions, 'token' | 'tls'>>
  readonly #tls: { key: string; cert: string } | null
  readonly #objects = new Map<string, Map<string, Obj>>(KINDS.map((k) => [k.resource, new Map()]))
  #history: WatchEvent[] = []
  #rv = 100
  /** Watches from a resourceVersion below this get 410 Gone. */
  #compactedRv = 0
  readonly #watchers = new Set<Watcher>()
  readonly #sockets = new Set<Socket>()
  #unreachableUntil = 0
  #server: Server | undefined
  #timer: NodeJS.Timeout | undefined
  url = ''

  constructor(opts: FakeKubeOptions = {}) {
    this.token = opts.token ?? `fake-token-${randomUUID()}`
    this.#tls = opts.tls === false ? null : makeCertificate()
    this.#opts = {
      autoRun: opts.autoRun ?? true,
      podIp: opts.podIp ?? '127.0.0.1',
      bookmarkMs: opts.bookmarkMs ?? 200,
      podDeleteMs: opts.podDeleteMs ?? 0,
    }
  }

  set autoRun(v: boolean) {
    this.#opts.autoRun = v
  }

  async start(): Promise<this> {
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.#handle(req, res)
    const srv: Server = this.#tls ? createHttpsServer(this.#tls, handler) : createHttpServer(handler)
    srv.on('connection', (s) => {
      if (Date.now() < this.#unreachableUntil) return void s.destroy()
      this.#sockets.add(s)
      s.on('close', () => this.#sockets.delete(s))
    })
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    this.#server = srv
    this.url = `${this.#tls ? 'https' : 'http'}://127.0.0.1:${(srv.address() as AddressInfo).port}`
    this.#timer = setInterval(() => this.#bookmark(), this.#opts.bookmarkMs)
    this.#timer.unref()
    return this
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer)
    for (const w of this.#watchers) w.res.destroy()
    for (const s of this.#sockets) s.destroy()
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()))
  }

  /** A kubeconfig file for the official client, pointing at this server with its token. */
  writeKubeconfig(dir: string, context = 'fake'): string {
    const path = join(dir, 'kubeconfig')
    writeFileSync(
      path,
      [
        'apiVersion: v1',
        'kind: Config',
        `current-context: ${context}`,
        this.#tls
          ? `clusters: [{ name: fake, cluster: { server: "${this.url}", certificate-authority-data: ${Buffer.from(this.#tls.cert).toString('base64')} } }]`
          : // Plain HTTP: the client refuses it unless the cluster entry says to skip TLS checks.
            `clusters: [{ name: fake, cluster: { server: "${this.url}", insecure-skip-tls-verify: true } }]`,
        `users: [{ name: fake, user: { token: "${this.token}" } }]`,
        `contexts: [{ name: ${context}, context: { cluster: fake, user: fake } }]`,
      ].join('\n'),
    )
    return path
  }

  // --- test hooks ------------------------------------------------------------------------------

  list(resource: string, ns?: string): Obj[] {
    return [...this.#objects.get(resource)!.values()].filter((o) => !ns || o.metadata.namespace === ns).map(clone)
  }

  get(resource: string, ns: string, name: string): Obj | undefined {
    const o = this.#objects.get(resource)!.get(`${ns}/${name}`)
    return o && clone(o)
  }

  /** Scheduled on a node, container running, Ready. */
  run(ns: string, name: string): void {
    this.#podStatus(ns, name, (pod) => {
      pod.spec.nodeName = 'node-1'
      const now = new Date().toISOString()
      pod.status = {
        phase: 'Running',
        podIP: this.#opts.podIp,
        podIPs: [{ ip: this.#opts.podIp }],
        hostIP: '10.0.0.1',
        startTime: now,
        conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map((type) => ({
          type,
          status: 'True',
          lastTransitionTime: now,
        })),
        containerStatuses: (pod.spec.containers as Obj[]).map((c) => ({
          name: c.name,
          image: c.image,
          imageID: '',
          ready: true,
          restartCount: 0,
          started: true,
          state: { running: { startedAt: now } },
        })),
      }
    })
  }

  /** What the scheduler says of a pod no node fits, with its FailedScheduling event. */
  unschedulable(ns: string, name: string, message: string): void {
    this.#podStatus(ns, name, (pod) => {
      pod.status = {
        phase: 'Pending',
        conditions: [
          {
            type: 'PodScheduled',
            status: 'False',
            reason: 'Unschedulable',
            message,
            lastTransitionTime: new Date().toISOString(),
          },
        ],
      }
    })
    this.event(ns, name, { type: 'Warning', reason: 'FailedScheduling', message, component: 'default-scheduler' })
  }

  /** A container waiting (ErrImagePull, ImagePullBackOff, ContainerCreating) with its message. */
  waiting(ns: string, name: string, reason: string, message: string): void {
    this.#podStatus(ns, name, (pod) => {
      pod.spec.nodeName = 'node-1'
      pod.status = {
        phase: 'Pending',
        conditions: [{ type: 'PodScheduled', status: 'True' }],
        containerStatuses: (pod.spec.containers as Obj[]).map((c) => ({
          name: c.name,
          image: c.image,
          imageID: '',
          ready: false,
          restartCount: 0,
          state: { waiting: { reason, message } },
        })),
      }
    })
  }

  /** The kubelet evicts the pod (node pressure): phase Failed, reason Evicted. */
  evict(ns: string, name: string, message = 'The node was low on resource: memory.'): void {
    this.#podStatus(ns, name, (pod) => {
      pod.status = { ...pod.status, phase: 'Failed', reason: 'Evicted', message, podIP: undefined, podIPs: undefined }
    })
  }

  /** The container is OOM-killed; restartPolicy Never, so the pod fails. */
  oomKill(ns: string, name: string): void {
    this.#podStatus(ns, name, (pod) => {
      pod.status = {
        ...pod.status,
        phase: 'Failed',
        containerStatuses: (pod.spec.containers as Obj[]).map((c) => ({
          name: c.name,
          image: c.image,
          imageID: '',
          ready: false,
          restartCount: 0,
          state: { terminated: { exitCode: 137, reason: 'OOMKilled', finishedAt: new Date().toISOString() } },
        })),
      }
    })
  }

  /** The node stopped reporting: the node controller marks the pod's Ready condition Unknown. */
  nodeLost(ns: string, name: string): void {
    this.#podStatus(ns, name, (pod) => {
      pod.status = {
        ...pod.status,
        reason: 'NodeLost',
        message: 'Node node-1 which was running pod is unresponsive',
        conditions: [{ type: 'Ready', status: 'Unknown', reason: 'NodeLost' }],
      }
    })
  }

  /** Someone (kubectl delete, a node drain) deletes the pod. */
  deleteBehindTheBack(resource: string, ns: string, name: string): void {
    const key = `${ns}/${name}`
    const o = this.#objects.get(resource)!.get(key)
    if (!o) throw new Error(`no ${resource} ${key}`)
    this.#remove(resource, key)
  }

  /** A core v1 Event about a pod. */
  event(ns: string, podName: string, e: { type: string; reason: string; message: string; component?: string }): void {
    const pod = this.#objects.get('pods')!.get(`${ns}/${podName}`)
    const now = new Date().toISOString()
    this.#store('events', 'ADDED', {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: `${podName}.${randomUUID().slice(0, 8)}`, namespace: ns },
      involvedObject: { kind: 'Pod', apiVersion: 'v1', namespace: ns, name: podName, uid: pod?.metadata.uid },
      type: e.type,
      reason: e.reason,
      message: e.message,
      source: { component: e.component ?? 'kubelet' },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    })
  }

  /** Every open watch ends (an API server restart, a load balancer's idle timeout). */
  dropWatches(): void {
    for (const w of this.#watchers) w.res.destroy()
    this.#watchers.clear()
  }

  /** History is compacted: a watch from an earlier resourceVersion gets 410 Gone. */
  compact(): void {
    this.#compactedRv = this.#rv + 1
    this.#history = []
  }

  /** Every connection, open or new, is cut for `ms` (the API server unreachable). */
  unreachableFor(ms: number): void {
    this.#unreachableUntil = Date.now() + ms
    this.dropWatches()
    for (const s of this.#sockets) s.destroy()
  }

  reachable(): void {
    this.#unreachableUntil = 0
  }

  get resourceVersion(): number {
    return this.#rv
  }

  get watchCount(): number {
    return this.#watchers.size
  }

  // --- the wire ----------------------------------------------------------------------------------

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (Date.now() < this.#unreachableUntil) return void req.socket.destroy()
    const url = new URL(req.url ?? '/', 'http://x')
    const seen: { rec?: RecordedRequest } = {}
    const send = (code: number, body: Obj) => {
      if (seen.rec) seen.rec.status = code
      res.writeHead(code, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    if (req.headers.authorization !== `Bearer ${this.token}`)
      return send(401, status(401, 'Unauthorized', 'Unauthorized'))
    const route = this.#route(url.pathname)
    if (!route) return send(404, status(404, 'NotFound', `the server could not find the requested resource`))
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    const raw = Buffer.concat(chunks).toString('utf8')
    const watch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1'
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      resource: route.kind.resource,
      name: route.name,
      watch,
      query: url.search,
      status: 200,
    }
    seen.rec = rec
    this.requests.push(rec)
    try {
      const body = raw ? (JSON.parse(raw) as Obj) : undefined
      if (req.method === 'GET' && watch) return this.#watch(route, url.searchParams, res)
      const [code, out] = this.#serve(
        req.method ?? 'GET',
        route,
        url.searchParams,
        body,
        req.headers['content-type'] ?? '',
      )
      send(code, out)
    } catch (err) {
      send(400, status(400, 'BadRequest', (err as Error).message))
    }
  }

  #route(path: string): { kind: Kind; ns: string; name: string | null } | null {
    for (const kind of KINDS) {
      const m = path.match(new RegExp(`^${kind.prefix}/namespaces/([^/]+)/${kind.resource}(?:/([^/]+))?/?$`))
      if (m) return { kind, ns: m[1]!, name: m[2] ?? null }
    }
    return null
  }

  #serve(
    method: string,
    { kind, ns, name }: { kind: Kind; ns: string; name: string | null },
    q: URLSearchParams,
    body: Obj | undefined,
    contentType: string,
  ): [number, Obj] {
    const objects = this.#objects.get(kind.resource)!
    const key = `${ns}/${name}`
    const notFound = (): [number, Obj] => [
      404,
      status(404, 'NotFound', `${kind.resource} "${name}" not found`, { name, kind: kind.resource }),
    ]
    if (method === 'GET' && !name) {
      const lm = labelMatcher(q.get('labelSelector'))
      const fm = fieldMatcher(q.get('fieldSelector'))
      const items = [...objects.values()].filter((o) => o.metadata.namespace === ns && lm(o) && fm(o)).map(clone)
      return [
        200,
        {
          kind: `${kind.kind}List`,
          apiVersion: kind.apiVersion,
          metadata: { resourceVersion: String(this.#rv) },
          items,
        },
      ]
    }
    if (method === 'GET') return objects.has(key) ? [200, clone(objects.get(key)!)] : notFound()
    if (method === 'POST' && !name) {
      if (!body) return [400, status(400, 'BadRequest', 'no body')]
      const o = clone(body)
      o.apiVersion ??= kind.apiVersion
      o.kind ??= kind.kind
      o.metadata = { ...o.metadata, namespace: ns }
      const invalid = this.#invalid(kind, o)
      if (invalid) return invalid
      const k = `${ns}/${o.metadata.name}`
      if (objects.has(k))
        return [
          409,
          status(409, 'AlreadyExists', `${kind.resource} "${o.metadata.name}" already exists`, {
            name: o.metadata.name,
            kind: kind.resource,
          }),
        ]
      o.metadata.uid = randomUUID()
      o.metadata.creationTimestamp = new Date().toISOString()
      if (kind.kind === 'Pod') o.status = { phase: 'Pending', qosClass: 'Burstable' }
      if (kind.kind === 'PersistentVolumeClaim') o.status = { phase: 'Bound' }
      const stored = this.#store(kind.resource, 'ADDED', o)
      this.accepted.push(clone(stored))
      if (kind.kind === 'Pod' && this.#opts.autoRun)
        setImmediate(() => this.#objects.get('pods')!.has(k) && this.run(ns, o.metadata.name))
      return [201, clone(stored)]
    }
    if (!name) return [405, status(405, 'MethodNotAllowed', `${method} not allowed`)]
    const cur = objects.get(key)
    if (!cur) return notFound()
    if (method === 'PATCH') {
      if (!body) return [400, status(400, 'BadRequest', 'no body')]
      let next: Obj
      if (contentType.startsWith('application/json-patch+json')) next = jsonPatch(cur, body as unknown as Obj[])
      else if (
        contentType.startsWith('application/merge-patch+json') ||
        contentType.startsWith('application/strategic-merge-patch+json')
      )
        next = mergePatch(cur, body) as Obj
      else
        return [
          415,
          status(415, 'UnsupportedMediaType', `the body of the request was in an unknown format: ${contentType}`),
        ]
      next.metadata = { ...next.metadata, name: cur.metadata.name, namespace: ns, uid: cur.metadata.uid }
      const invalid = this.#invalid(kind, next)
      if (invalid) return invalid
      const stored = this.#store(kind.resource, 'MODIFIED', next)
      this.accepted.push(clone(stored))
      return [200, clone(stored)]
    }
    if (method === 'PUT') {
      if (!body) return [400, status(400, 'BadRequest', 'no body')]
      const want = body.metadata?.resourceVersion
      if (want && want !== cur.metadata.resourceVersion)
        return [
          409,
          status(
            409,
            'Conflict',
            `Operation cannot be fulfilled on ${kind.resource} "${name}": the object has been modified`,
          ),
        ]
      const next = clone(body)
      next.apiVersion ??= kind.apiVersion
      next.kind ??= kind.kind
      next.metadata = {
        ...next.metadata,
        name,
        namespace: ns,
        uid: cur.metadata.uid,
        creationTimestamp: cur.metadata.creationTimestamp,
      }
      const invalid = this.#invalid(kind, next)
      if (invalid) return invalid
      const stored = this.#store(kind.resource, 'MODIFIED', next)
      this.accepted.push(clone(stored))
      return [200, clone(stored)]
    }
    if (method === 'DELETE') {
      const uid = body?.preconditions?.uid
      if (uid && uid !== cur.metadata.uid)
        return [
          409,
          status(
            409,
            'Conflict',
            `Precondition failed: UID in precondition: ${uid}, UID in object meta: ${cur.metadata.uid}`,
          ),
        ]
      const grace = body?.gracePeriodSeconds
      if (kind.kind === 'Pod' && this.#opts.podDeleteMs > 0 && grace !== 0) {
        if (cur.metadata.deletionTimestamp) return [200, clone(cur)] // already terminating
        const next = clone(cur)
        next.metadata.deletionTimestamp = new Date().toISOString()
        next.metadata.deletionGracePeriodSeconds = grace ?? cur.spec.terminationGracePeriodSeconds ?? 30
        const stored = this.#store('pods', 'MODIFIED', next)
        const t = setTimeout(() => {
          if (this.#objects.get('pods')!.get(key)?.metadata.uid === stored.metadata.uid) this.#remove('pods', key)
        }, this.#opts.podDeleteMs)
        t.unref()
        return [200, clone(stored)]
      }
      this.#remove(kind.resource, key)
      return [200, clone(cur)]
    }
    return [405, status(405, 'MethodNotAllowed', `${method} not allowed`)]
  }

  #invalid(kind: Kind, o: Obj): [number, Obj] | null {
    const causes = [...metaProblems(o), ...kubeSchemaProblems(o).map((p) => ({ field: p.split(':')[0]!, message: p }))]
    if (!causes.length) return null
    const name = o.metadata?.name
    return [
      422,
      status(422, 'Invalid', `${kind.kind} "${name}" is invalid: ${causes.map((c) => c.message).join('; ')}`, {
        name,
        kind: kind.kind,
        causes: causes.map((c) => ({ reason: 'FieldValueInvalid', message: c.message, field: c.field })),
      }),
    ]
  }

  #store(resource: string, type: 'ADDED' | 'MODIFIED', o: Obj): Obj {
    o.metadata.resourceVersion = String(++this.#rv)
    const key = `${o.metadata.namespace}/${o.metadata.name}`
    this.#objects.get(resource)!.set(key, o)
    this.#emit({ rv: this.#rv, resource, type, obj: clone(o) })
    return o
  }

  #remove(resource: string, key: string): void {
    const o = this.#objects.get(resource)!.get(key)
    if (!o) return
    this.#objects.get(resource)!.delete(key)
    const gone = clone(o)
    gone.metadata.resourceVersion = String(++this.#rv)
    this.#emit({ rv: this.#rv, resource, type: 'DELETED', obj: gone })
  }

  #podStatus(ns: string, name: string, change: (pod: Obj) => void): void {
    const cur = this.#objects.get('pods')!.get(`${ns}/${name}`)
    if (!cur) throw new Error(`no pod ${ns}/${name}`)
    const next = clone(cur)
    change(next)
    this.#store('pods', 'MODIFIED', next)
  }

  #emit(e: WatchEvent): void {
    this.#history.push(e)
    for (const w of this.#watchers) if (w.resource === e.resource && e.obj.metadata.namespace === w.ns) this.#send(w, e)
  }

  #send(w: Watcher, e: WatchEvent): void {
    if (!w.match(e.obj)) return
    w.res.write(JSON.stringify({ type: e.type, object: e.obj }) + '\n')
  }

  #watch({ kind, ns }: { kind: Kind; ns: string }, q: URLSearchParams, res: ServerResponse): void {
    const lm = labelMatcher(q.get('labelSelector'))
    const fm = fieldMatcher(q.get('fieldSelector'))
    const w: Watcher = {
      resource: kind.resource,
      ns,
      match: (o) => lm(o) && fm(o),
      res,
      bookmarks: q.get('allowWatchBookmarks') === 'true',
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' })
    res.flushHeaders()
    const from = q.get('resourceVersion')
    if (from && from !== '0') {
      if (Number(from) < this.#compactedRv) {
        res.end(
          JSON.stringify({
            type: 'ERROR',
            object: status(410, 'Expired', `too old resource version: ${from} (${this.#compactedRv})`),
          }) + '\n',
        )
        return
      }
      for (const e of this.#history)
        if (e.rv > Number(from) && e.resource === kind.resource && e.obj.metadata.namespace === ns) this.#send(w, e)
    } else {
      for (const o of this.#objects.get(kind.resource)!.values())
        if (o.metadata.namespace === ns)
          this.#send(w, { rv: this.#rv, resource: kind.resource, type: 'ADDED', obj: clone(o) })
    }
    this.#watchers.add(w)
    const timeout = Number(q.get('timeoutSeconds') ?? 0)
    const t = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined
    res.on('close', () => {
      clearTimeout(t)
      this.#watchers.delete(w)
    })
  }

  #bookmark(): void {
    for (const w of this.#watchers) {
      if (!w.bookmarks) continue
      const kind = KINDS.find((k) => k.resource === w.resource)!
      w.res.write(
        JSON.stringify({
          type: 'BOOKMARK',
          object: { kind: kind.kind, apiVersion: kind.apiVersion, metadata: { resourceVersion: String(this.#rv) } },
        }) + '\n',
      )
    }
  }
}

export async function startFakeKubeApi(opts: FakeKubeOptions = {}): Promise<FakeKubeApi> {
  return new FakeKubeApi(opts).start()
}
