import type { TemplateConfig } from '../../src/config/types.js'
import { DEMO_APP_SCRIPT } from '../../src/demo-app/index.js'

/**
 * A complete TemplateConfig for tests. Defaults: template `demo` on the `fake` provider (no
 * processes), one warm instance, at most 10, no idle or lifetime limit, 30 s start timeout.
 */
export function makeTemplate(overrides: Partial<TemplateConfig> = {}): TemplateConfig {
  return {
    name: 'demo',
    displayName: 'Demo',
    description: 'test template',
    provider: 'fake',
    minFree: 1,
    maxInstances: 10,
    idleTimeoutMs: 0,
    maxLifetimeMs: 0,
    startTimeoutMs: 30_000,
    port: null,
    healthPath: '/healthz',
    pathMode: 'strip',
    hostHeader: 'target',
    whenFull: 'queue',
    allowedGroups: [],
    activityIgnore: [],
    pricePerHour: 0,
    injectWidget: false,
    settings: {},
    ...overrides,
  }
}

/** A template on the `local` provider that runs the demo session app (real processes). */
export function makeLocalDemoTemplate(
  overrides: Partial<TemplateConfig> = {},
  extraArgs: readonly string[] = [],
): TemplateConfig {
  return makeTemplate({
    provider: 'local',
    settings: { command: ['node', DEMO_APP_SCRIPT, ...extraArgs], stopGrace: 3000 },
    ...overrides,
  })
}
