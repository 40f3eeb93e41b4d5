import type { Config } from '../config/types.js'
import type { PoolService } from '../pool/pool-service.js'
import type { Store } from '../store/store.js'
import { forecastChart, type ForecastBar } from './forecast-chart.js'
import { esc } from './html.js'

const HOUR = 3_600_000

/**
 * The admin dashboard's warm-pool forecasts (issue 13): for each template with a `warmPool`, the
 * last 24 hours of actual arrivals beside what was forecast for each hour and the warm instances it
 * asked for — how an operator checks a `forecast-only` template before turning it on. Empty when
 * no template has a warm-pool policy.
 */
export async function forecastSection(config: Config, store: Store, pool: PoolService, now: number): Promise<string> {
  const out: string[] = []
  const first = Math.floor(now / HOUR) * HOUR - 23 * HOUR
  for (const t of config.templates) {
    if (!t.warmPool) continue
    const [points, history] = await Promise.all([
      pool.forecastHistory(t.name),
      store.listHistory({ template: t.name, from: first, limit: 100_000 }),
    ])
    const byPoint = new Map(points.map((p) => [p.slotStart, p]))
    const bars: ForecastBar[] = []
    for (let s = first; s <= now; s += HOUR) {
      const p = byPoint.get(s)
      bars.push({
        slotStart: s,
        actual: history.filter((h) => h.startedAt >= s && h.startedAt < s + HOUR).length,
        forecast: p ? p.arrivals : null,
        predicted: p ? p.predicted : null,
      })
    }
    const target = pool.warmTargets().get(t.name)
    const summary = target
      ? `<p class="muted">${esc(t.name)}: now ${target.predicted ?? 0} warm asked for by the forecast, ${target.minFree} kept (${target.applied ? 'applied' : 'not applied'}).</p>`
      : ''
    out.push(forecastChart(t.name, bars, t.warmPool.mode) + summary)
  }
  return out.join('')
}
