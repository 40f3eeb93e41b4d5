import { Counter, Gauge, Histogram } from 'prom-client'
import type { Registry } from 'prom-client'
import type { SharedLoad } from '../domain/shared.js'

/** The gateway's shared-pool metrics (issue 14); a no-op set without a Registry. */
export interface SharedMetrics {
  observe(load: SharedLoad): void
  rejected(template: string): void
  retry(template: string, outcome: 'retried' | 'failed'): void
}

export function createSharedMetrics(registry: Registry | undefined): SharedMetrics {
  if (!registry) return { observe() {}, rejected() {}, retry() {} }
  const registers = [registry]
  const connections = new Gauge({
    name: 'studiopool_shared_connections',
    help: 'Shared templates: connections per instance (sticky: users seated; per-request: requests in flight)',
    labelNames: ['template', 'instance'],
    registers,
  })
  const queue = new Gauge({
    name: 'studiopool_shared_queue_length',
    help: 'Shared per-request templates: requests waiting for a free instance',
    labelNames: ['template'],
    registers,
  })
  const waiting = new Gauge({
    name: 'studiopool_shared_waiting',
    help: 'Shared templates: users on the progress page and queued requests (the load the pool scales for)',
    labelNames: ['template'],
    registers,
  })
  const wait = new Histogram({
    name: 'studiopool_shared_queue_wait_max_seconds',
    help: 'Shared per-request templates: the longest queue wait of each report period',
    labelNames: ['template'],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers,
  })
  const rejected = new Counter({
    name: 'studiopool_shared_rejected_total',
    help: 'Shared per-request templates: requests answered 503 (queue full or wait timed out)',
    labelNames: ['template'],
    registers,
  })
  const retries = new Counter({
    name: 'studiopool_shared_upstream_failures_total',
    help: 'Shared templates: requests whose instance failed before answering, retried on another or failed',
    labelNames: ['template', 'outcome'],
    registers,
  })
  const seen = new Map<string, Set<string>>()
  return {
    observe(l) {
      const before = seen.get(l.template) ?? new Set()
      const now = new Set<string>()
      for (const i of l.instances) {
        now.add(i.id)
        connections.set({ template: l.template, instance: i.id }, i.connections)
      }
      for (const id of before) if (!now.has(id)) connections.remove({ template: l.template, instance: id })
      seen.set(l.template, now)
      queue.set({ template: l.template }, l.queued)
      waiting.set({ template: l.template }, l.waiting)
      if (l.maxQueueWaitMs > 0) wait.observe({ template: l.template }, l.maxQueueWaitMs / 1000)
    },
    rejected: (template) => rejected.inc({ template }),
    retry: (template, outcome) => retries.inc({ template, outcome }),
  }
}
