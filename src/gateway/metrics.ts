import { Counter, Gauge, Histogram } from 'prom-client'
import type { Registry } from 'prom-client'

export type StatusClass = '1xx' | '2xx' | '3xx' | '4xx' | '5xx' | 'aborted'

/** The gateway's metrics; a no-op set when no Registry is given, so the hot path never branches on it. */
export interface GatewayMetrics {
  request(statusClass: StatusClass, seconds: number): void
  wsOpened(): void
  wsClosed(): void
  upstreamError(code: string): void
  activityWrite(result: 'ok' | 'error', entries: number): void
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
    help: 'Requests answered by the gateway for sessions, by status class',
    labelNames: ['status_class'],
    registers,
  })
  const latency = new Histogram({
    name: 'studiopool_gateway_request_duration_seconds',
    help: 'Time from request to the end of the response, by status class',
    labelNames: ['status_class'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
    registers,
  })
  const ws = new Gauge({
    name: 'studiopool_gateway_websockets_open',
    help: 'WebSocket connections open through the gateway',
    registers,
  })
  const upstreamErrors = new Counter({
    name: 'studiopool_gateway_upstream_errors_total',
    help: 'Upstream failures, by error code',
    labelNames: ['code'],
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
  // Label children are looked up once, not per request.
  const byClass = new Map<
    StatusClass,
    { c: ReturnType<typeof requests.labels>; h: ReturnType<typeof latency.labels> }
  >()
  for (const k of ['1xx', '2xx', '3xx', '4xx', '5xx', 'aborted'] as const)
    byClass.set(k, { c: requests.labels(k), h: latency.labels(k) })
  return {
    request(cls, seconds) {
      const m = byClass.get(cls)!
      m.c.inc()
      m.h.observe(seconds)
    },
    wsOpened: () => ws.inc(),
    wsClosed: () => ws.dec(),
    upstreamError: (code) => upstreamErrors.labels(code).inc(),
    activityWrite(result, n) {
      writes.labels(result).inc()
      if (result === 'ok') entries.inc(n)
    },
  }
}
