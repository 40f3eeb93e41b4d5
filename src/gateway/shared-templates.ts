import type { Config } from '../config/types.js'
import type { SharedTemplateRoute } from '../domain/routes.js'

/** The `mode: shared` templates of the configuration, as the gateway needs them (issue 14). */
export function sharedTemplateRoutes(config: Pick<Config, 'templates'>): SharedTemplateRoute[] {
  const out: SharedTemplateRoute[] = []
  // A gateway-only configuration may carry no templates at all.
  for (const t of (config.templates as typeof config.templates | undefined) ?? []) {
    if (!t.shared) continue
    out.push({
      name: t.name,
      displayName: t.displayName,
      routing: t.shared.routing,
      maxConnectionsPerInstance: t.shared.maxConnectionsPerInstance,
      loadFactor: t.shared.loadFactor,
      queueSize: t.shared.queueSize,
      queueTimeoutMs: t.shared.queueTimeoutMs,
      allowedGroups: t.allowedGroups,
    })
  }
  return out
}
