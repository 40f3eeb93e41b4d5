import type { InstanceState } from '../domain/instance.js'
import type { StateSample } from '../store/store.js'
import { esc } from './html.js'

/** States drawn, bottom to top, with their colours (readable on light and dark backgrounds). */
export const CHART_STATES: readonly { state: InstanceState; color: string; label: string }[] = [
  { state: 'ready', color: '#2e9d62', label: 'ready' },
  { state: 'starting', color: '#e0a526', label: 'starting' },
  { state: 'provisioning', color: '#d9702b', label: 'provisioning' },
  { state: 'queued', color: '#c2413a', label: 'queued' },
  { state: 'suspended', color: '#7c8a99', label: 'suspended' },
  { state: 'stopping', color: '#5870c9', label: 'stopping' },
]

const W = 720
const H = 220
const PAD = { l: 34, r: 10, t: 10, b: 24 }

/**
 * Instances by state over a window, as a stacked area chart in inline SVG (no library, no script).
 * Samples are summed over templates and bucketed; a bucket keeps the last sample time in it, and
 * buckets without samples leave a gap rather than inventing numbers.
 */
export function stateChart(samples: readonly StateSample[], from: number, to: number, buckets = 96): string {
  const span = Math.max(1, to - from)
  // Sum over templates per sample time, then keep the latest sample time per bucket.
  const byTime = new Map<number, Map<InstanceState, number>>()
  for (const s of samples) {
    if (s.at < from || s.at > to) continue
    let m = byTime.get(s.at)
    if (!m) byTime.set(s.at, (m = new Map()))
    m.set(s.state, (m.get(s.state) ?? 0) + s.count)
  }
  const cols: (Map<InstanceState, number> | null)[] = new Array(buckets).fill(null)
  const colAt: number[] = new Array(buckets).fill(-1)
  for (const [at, m] of byTime) {
    const i = Math.min(buckets - 1, Math.floor(((at - from) / span) * buckets))
    if (at > colAt[i]!) {
      colAt[i] = at
      cols[i] = m
    }
  }
  const totals = cols.map((m) => (m ? CHART_STATES.reduce((a, s) => a + (m.get(s.state) ?? 0), 0) : 0))
  // The peak of the raw samples (a bucket shows only its latest sample, which may be lower).
  let peak = 0
  for (const m of byTime.values())
    peak = Math.max(
      peak,
      CHART_STATES.reduce((a, s) => a + (m.get(s.state) ?? 0), 0),
    )
  const yMax = niceCeil(Math.max(...totals, 4))
  const iw = W - PAD.l - PAD.r
  const ih = H - PAD.t - PAD.b
  const x = (i: number) => PAD.l + (i / (buckets - 1)) * iw
  const y = (v: number) => PAD.t + ih - (v / yMax) * ih

  const parts: string[] = axes(from, span, yMax, y)

  // Runs of consecutive buckets with data, each drawn as stacked polygons.
  const runs: [number, number][] = []
  for (let i = 0; i < buckets; i++) {
    if (!cols[i]) continue
    const last = runs[runs.length - 1]
    if (last && last[1] === i - 1) last[1] = i
    else runs.push([i, i])
  }
  for (const [a, b] of runs) {
    const base = new Array(b - a + 1).fill(0) as number[]
    for (const s of CHART_STATES) {
      const top = base.map((v, k) => v + (cols[a + k]!.get(s.state) ?? 0))
      if (top.some((v, k) => v !== base[k])) {
        // A single bucket is drawn as a thin bar so that it is visible.
        const xs = a === b ? [x(a) - 2, x(a) + 2] : base.map((_, k) => x(a + k))
        const tops = a === b ? [top[0]!, top[0]!] : top
        const bases = a === b ? [base[0]!, base[0]!] : base
        const upper = xs.map((px, k) => `${px.toFixed(1)},${y(tops[k]!).toFixed(1)}`)
        const lower = xs.map((px, k) => `${px.toFixed(1)},${y(bases[k]!).toFixed(1)}`).reverse()
        parts.push(`<polygon points="${[...upper, ...lower].join(' ')}" fill="${s.color}" fill-opacity="0.85"/>`)
      }
      for (let k = 0; k < top.length; k++) base[k] = top[k]!
    }
  }

  const latest = [...cols].reverse().find((m) => m !== null)
  const now = latest ? CHART_STATES.map((s) => `${latest.get(s.state) ?? 0} ${s.label}`).join(', ') : 'no samples yet'
  const desc = runs.length
    ? `Peak ${peak} instances. Latest sample: ${now}.`
    : 'No samples were recorded in the last 24 hours.'
  const legend = CHART_STATES.map(
    (s) =>
      `<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" rx="2" fill="${s.color}"/></svg> ${esc(s.label)}</li>`,
  ).join('')
  const empty = runs.length
    ? ''
    : `<text x="${PAD.l + iw / 2}" y="${PAD.t + ih / 2}" text-anchor="middle">No samples yet</text>`
  return (
    `<figure class="chart panel"><svg viewBox="0 0 ${W} ${H}" role="img" aria-labelledby="chart-t chart-d">` +
    `<title id="chart-t">Instances by state, last 24 hours</title><desc id="chart-d">${esc(desc)}</desc>${parts.join('')}${empty}</svg>` +
    `<figcaption><ul class="legend" aria-label="Legend">${legend}</ul><p class="muted">${esc(desc)}</p></figcaption></figure>`
  )
}

function niceCeil(v: number): number {
  const steps = [1, 2, 2.5, 5, 10]
  const mag = 10 ** Math.floor(Math.log10(v))
  for (const s of steps) if (s * mag >= v) return s * mag
  return 10 * mag
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(1)
}

/** Grid lines with the count scale, and the time axis of the last 24 hours. */
function axes(from: number, span: number, yMax: number, y: (v: number) => number): string[] {
  const iw = W - PAD.l - PAD.r
  const parts: string[] = []
  for (let k = 0; k <= 4; k++) {
    const v = (yMax / 4) * k
    parts.push(`<line class="grid" x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"/>`)
    parts.push(`<text x="${PAD.l - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`)
  }
  for (let h = 0; h <= 24; h += 6) {
    const at = from + (span * h) / 24
    const px = PAD.l + (h / 24) * iw
    const label = h === 24 ? 'now' : `−${24 - h} h`
    parts.push(
      `<text x="${px.toFixed(1)}" y="${H - 6}" text-anchor="${h === 0 ? 'start' : h === 24 ? 'end' : 'middle'}"><title>${new Date(at).toISOString().slice(0, 16).replace('T', ' ')} UTC</title>${label}</text>`,
    )
  }
  return parts
}
