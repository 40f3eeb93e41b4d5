import { Counter, Gauge, Histogram } from 'prom-client'
import type { Registry } from 'prom-client'

export type StatusClass = '1xx' | '2xx' | '3xx' | '4xx' | '5xx' | 'aborted'

/** The gateway's metrics; a no-op set when no Registry is given, so the hot path never branches on it. */
/** `template` is the session's template, or `_default` for the seed's DEFAULT_URL target. */
export interface GatewayMetrics {
  request(template: string, statusClass: StatusClass, seconds: number): void
  wsOpened(template: string): void
  wsClosed(template: string): void
  upstreamError(template: string, code: string): void
  /** `lagSeconds`: from the oldest activity of the batch to its write (what the leader's culling sees). */
  activityWrite(result: 'ok' | 'error', entries: number, lagSeconds?: number): void
}

export function statusClass(status: number): StatusClass {
  if (status === 0) return 'aborted'
  if (status < 200) return '1xx'
  if (status < 300) return '2xx'
  if (status < 400) return '3xx'
  if (status < 500) return '4xx'
  return '5xx'
}

export function createGatewayMetrics(registry: Registry | undefined): GatewayMetrics {
  if (!registry) {
    const noop = () => {}
    return { request: noop, wsOpened: noop, wsClosed: noop, upstreamError: noop, activityWrite: noop }
  }
  const registers = [registry]
  const requests = new Counter({
    name: 'studiopool_gateway_requests_total',
    help: 'Requests answered by the gateway for sessions, by template and status class',
    labelNames: ['template', 'status_class'],
    registers,
  })
  const latency = new Histogram({
    name: 'studiopool_gateway_request_duration_seconds',
    help: 'Time from request to the end of the response, by template and status class',
    labelNames: ['template', 'status_class'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
    registers,
  })
  const ws = new Gauge({
    name: 'studiopool_gateway_websockets_open',
    help: 'WebSocket connections open through the gateway, by template',
    labelNames: ['template'],
    registers,
  })
  const upstreamErrors = new Counter({
    name: 'studiopool_gateway_upstream_errors_total',
    help: 'Upstream failures, by template and error code',
    labelNames: ['template', 'code'],
    registers,
  })
  const writes = new Counter({
    name: 'studiopool_gateway_activity_writes_total',
    help: 'Batched activity writes to the store or API, by result',
    labelNames: ['result'],
    registers,
  })
  const entries = new Counter({
    name: 'studiopool_gateway_activity_entries_total',
    help: 'Instance activity entries written',
    registers,
  })
  const writeLag = new Histogram({
    name: 'studiopool_gateway_activity_write_lag_seconds',
    help: 'Delay from the oldest activity of a batch to its write to the store (or the API): what culling sees',
    buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60],
    registers,
  })
  // Label children are looked up once per template, not per request (templates are few and fixed).
  type Children = Record<StatusClass, { c: ReturnType<typeof requests.labels>; h: ReturnType<typeof latency.labels> }>
  const byTemplate = new Map<string, Children>()
  const children = (template: string): Children => {
    let ch = byTemplate.get(template)
    if (!ch) {
      ch = {} as Children
      for (const k of ['1xx', '2xx', '3xx', '4xx', '5xx', 'aborted'] as const)
        ch[k] = { c: requests.labels(template, k), h: latency.labels(template, k) }
      byTemplate.set(template, ch)
    }
    return ch
  }
  return {
    request(template, cls, seconds) {
      const m = children(template)[cls]
      m.c.inc()
      m.h.observe(seconds)
    },
    wsOpened: (template) => ws.labels(template).inc(),
    wsClosed: (template) => ws.labels(template).dec(),
    upstreamError: (template, code) => upstreamErrors.labels(template, code).inc(),
    activityWrite(result, n, lag) {
      writes.labels(result).inc()
      if (result === 'ok') entries.inc(n)
      if (result === 'ok' && lag !== undefined) writeLag.observe(lag)
    },
  }
}
