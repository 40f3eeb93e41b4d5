const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/

/**
 * Reads `90s`, `30m`, `12h`, `1.5h`, `250ms`, or a bare number of milliseconds.
 * Returns undefined for anything else.
 */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value) : undefined
  const m = DURATION_RE.exec(value.trim())
  if (!m) return undefined
  return Math.round(Number(m[1]) * UNITS[m[2] ?? 'ms']!)
}
