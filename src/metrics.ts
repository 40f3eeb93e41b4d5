import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/**
 * prom-client's default set has three gauges named like counters (`nodejs_active_*_total`), which
 * `promtool check metrics` rejects; the same figures are exported without the suffix.
 */
const MISNAMED_DEFAULTS = [
  'nodejs_active_resources_total',
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
]

/** Buckets for a session's time to ready: a warm hit (ms) up to a cold EC2 or Slurm start (minutes). */
const READY_BUCKETS = [0.05, 0.25, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600]

export interface MetricsOptions {
  /** The package version, for `studiopool_build_info`. */
  readonly version?: string
}

/**
 * One registry per server (never prom-client's global one), so tests can build many servers.
 * Node and process metrics keep their standard names (`process_cpu_seconds_total`,
 * `nodejs_heap_size_used_bytes`), so stock Node dashboards work unchanged.
 */
// eslint-disable-next-line max-lines-per-function -- a declarative list, one entry per metric; splitting it would only scatter the names
export function createMetrics(opts: MetricsOptions = {}) {
  const registry = baseRegistry(opts.version ?? 'unknown')
  return {
    registry,
    timeToReady: new Histogram({
      name: 'studiopool_session_ready_seconds',
      help: 'From a session being assigned to its user to its app answering, by template and outcome (warm, cold, failed)',
      labelNames: ['template', 'outcome'],
      buckets: READY_BUCKETS,
      registers: [registry],
    }),
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
    sharedScaleEvents: new Counter({
      name: 'studiopool_shared_scale_events_total',
      help: 'Shared templates: instances started (out), drained (drain) and ended after draining (in), by reason',
      labelNames: ['template', 'direction', 'reason'],
      registers: [registry],
    }),
    sharedRecycles: new Counter({
      name: 'studiopool_shared_recycles_total',
      help: 'Shared templates: instances recycled (requests, hours or maxLifetime reached)',
      labelNames: ['template'],
      registers: [registry],
    }),
    sharedInstances: new Gauge({
      name: 'studiopool_shared_instances',
      help: 'Shared templates: instances serving, draining, and wanted by the load',
      labelNames: ['template', 'kind'],
      registers: [registry],
    }),
    ...replicaMetrics(registry),
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

/** Node and process defaults (promtool-clean) and `studiopool_build_info`. */
function baseRegistry(version: string): Registry {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(name)
  new Gauge({
    name: 'studiopool_build_info',
    help: 'Always 1; the labels say which studiopool and Node.js this replica runs',
    labelNames: ['version', 'node'],
    registers: [registry],
  }).set({ version, node: process.version }, 1)
  return registry
}

/** Several replicas (docs/ha.md): leadership, route propagation, activity write lag. */
function replicaMetrics(registry: Registry) {
  return {
    leader: new Gauge({
      name: 'studiopool_worker_leader',
      help: '1 while this replica leads the worker',
      registers: [registry],
    }),
    leaderChanges: new Counter({
      name: 'studiopool_worker_leader_changes_total',
      help: 'Times this replica became (to=leader) or stopped being (to=standby) the worker leader',
      labelNames: ['to'],
      registers: [registry],
    }),
    routePropagation: new Histogram({
      name: 'studiopool_route_propagation_seconds',
      help: "Delay from an instance's route change in the store to this replica's route table",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
  }
}
