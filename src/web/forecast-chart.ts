import { esc } from './html.js'

/** One hour of the forecast-beside-actuals chart. */
export interface ForecastBar {
  readonly slotStart: number
  /** Sessions that started in the hour. */
  readonly actual: number
  /** Forecast arrivals for the hour, when one was made. */
  readonly forecast: number | null
  /** Free instances the forecast asked for. */
  readonly predicted: number | null
}

const W = 720
const H = 160
const PAD = { l: 34, r: 10, t: 10, b: 22 }

/**
 * The predictive warm pool's forecast beside the actual arrivals (issue 13, docs/cost.md
 * "forecast-only"): bars are the sessions started per hour, the line the forecast arrivals, the
 * dashed line the free instances the forecast asked for. Inline SVG, no script.
 */
export function forecastChart(template: string, bars: readonly ForecastBar[], mode: string): string {
  if (!bars.length) return `<p class="muted">${esc(template)}: no history yet.</p>`
  const yMax = Math.max(4, ...bars.map((b) => Math.max(b.actual, b.forecast ?? 0, b.predicted ?? 0)))
  const iw = W - PAD.l - PAD.r
  const ih = H - PAD.t - PAD.b
  const bw = iw / bars.length
  const x = (i: number) => PAD.l + i * bw
  const y = (v: number) => PAD.t + ih - (v / yMax) * ih
  const parts: string[] = [
    `<line x1="${PAD.l}" y1="${y(0)}" x2="${W - PAD.r}" y2="${y(0)}" stroke="currentColor" stroke-opacity="0.4"/>`,
    `<text x="${PAD.l - 4}" y="${y(yMax) + 4}" text-anchor="end" font-size="10" fill="currentColor">${Math.round(yMax)}</text>`,
  ]
  bars.forEach((b, i) => {
    const h = y(0) - y(b.actual)
    parts.push(
      `<rect x="${(x(i) + 1).toFixed(1)}" y="${y(b.actual).toFixed(1)}" width="${Math.max(1, bw - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="#5870c9" fill-opacity="0.6"><title>${new Date(b.slotStart).toISOString().slice(11, 16)} UTC: ${b.actual} started, forecast ${b.forecast?.toFixed(1) ?? '—'}, warm ${b.predicted ?? '—'}</title></rect>`,
    )
    if (i % 6 === 0)
      parts.push(
        `<text x="${x(i).toFixed(1)}" y="${H - 6}" font-size="10" fill="currentColor">${new Date(b.slotStart).toISOString().slice(11, 16)}</text>`,
      )
  })
  const line = (pick: (b: ForecastBar) => number | null) =>
    bars
      .map((b, i) => (pick(b) === null ? null : `${(x(i) + bw / 2).toFixed(1)},${y(pick(b)!).toFixed(1)}`))
      .filter((p) => p !== null)
      .join(' ')
  const f = line((b) => b.forecast)
  if (f) parts.push(`<polyline points="${f}" fill="none" stroke="#e0a526" stroke-width="2"/>`)
  const p = line((b) => b.predicted)
  if (p) parts.push(`<polyline points="${p}" fill="none" stroke="#2e9d62" stroke-width="1.5" stroke-dasharray="4 3"/>`)
  const label = `${template}: sessions started per hour (bars), forecast (line), warm instances asked for (dashed); mode ${mode}`
  return (
    `<figure class="chart"><svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(label)}" width="100%">${parts.join('')}</svg>` +
    `<figcaption>${esc(label)}</figcaption></figure>`
  )
}
