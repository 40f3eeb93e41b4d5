import type { TemplateConfig } from '../config/types.js'
import { effectiveSchedule } from '../schedule/schedule.js'
import type { SharedBounds } from './pool-shared.js'

/**
 * The bounds of a shared template now (issue 14 with issue 13's schedules, docs/shared-pools.md
 * "Schedules"): in a window, the window's `minFree` is the number of instances kept running
 * (`minInstances`) and its `maxInstances` the cap; outside every window, the `outside` values, or
 * zero for `outside: unavailable` (the pool drains to nothing). A window that opens within `leadMs`
 * (the template's measured start time plus one worker cycle) already counts, so its instances are
 * ready when it opens. Without a schedule: the template's own `minInstances` and `maxInstances`.
 */
export function scheduledSharedBounds(t: TemplateConfig, now: number, leadMs: number): SharedBounds {
  const own = { minInstances: t.shared?.minInstances ?? 0, maxInstances: t.maxInstances }
  if (!t.schedule) return own
  const s = effectiveSchedule(t.schedule, now, leadMs)
  const maxInstances = Math.min(t.maxInstances, s.maxInstances)
  return { minInstances: Math.min(s.minFree, maxInstances), maxInstances }
}
