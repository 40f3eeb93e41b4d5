import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** One registry per server (never prom-client's global one), so tests can build many servers. */
export function createMetrics() {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'studiopool_process_' })
  return {
    registry,
    instances: new Gauge({
      name: 'studiopool_instances',
      help: 'Instances by template, state and assignment',
      labelNames: ['template', 'state', 'assigned'],
      registers: [registry],
    }),
    queueLength: new Gauge({
      name: 'studiopool_queue_length',
      help: 'Requests waiting for capacity',
      labelNames: ['template'],
      registers: [registry],
    }),
    templateUnavailable: new Gauge({
      name: 'studiopool_template_unavailable',
      help: "1 while the template's provider breaker is open (creates failing; requests get 503 PROVIDER_UNAVAILABLE)",
      labelNames: ['template'],
      registers: [registry],
    }),
    requests: new Counter({
      name: 'studiopool_requests_total',
      help: 'Session requests by outcome (existing, warm, cold, queued, rejected, error)',
      labelNames: ['template', 'outcome'],
      registers: [registry],
    }),
    assignments: new Counter({
      name: 'studiopool_assignments_total',
      help: 'Instances assigned to users',
      labelNames: ['template', 'kind'],
      registers: [registry],
    }),
    releases: new Counter({
      name: 'studiopool_releases_total',
      help: 'Assignments ended, by reason',
      labelNames: ['template', 'reason'],
      registers: [registry],
    }),
    providerErrors: new Counter({
      name: 'studiopool_provider_errors_total',
      help: 'Provider call failures',
      labelNames: ['provider', 'op'],
      registers: [registry],
    }),
    workerCycle: new Histogram({
      name: 'studiopool_worker_cycle_seconds',
      help: 'Worker cycle duration',
      buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers: [registry],
    }),
    commands: new Histogram({
      name: 'studiopool_api_request_seconds',
      help: 'API requests by route and status class',
      labelNames: ['route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1],
      registers: [registry],
    }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
