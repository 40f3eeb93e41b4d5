/** Terminal output helpers for the CLI. */

export function formatTable(rows: readonly Record<string, unknown>[], cols: readonly string[]): string {
  if (!rows.length) return '(none)'
  const cell = (v: unknown) => (v === null || v === undefined ? '-' : String(v))
  const widths = cols.map((c) => Math.min(40, Math.max(c.length, ...rows.map((r) => cell(r[c]).length))))
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.slice(0, widths[i]).padEnd(widths[i]!))
      .join('  ')
      .trimEnd()
  return [
    line([...cols]),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map((r) => line(cols.map((c) => cell(r[c])))),
  ].join('\n')
}

/** One line: `[#########.........]  45%  starting  pulling image` (or the queue position). */
export function renderProgress(
  i: { state: string; progress: number; progressMessage: string; queuePosition: number | null },
  columns: number,
): string {
  const width = 24
  const pct = Math.max(0, Math.min(100, Math.round(i.progress)))
  const filled = Math.round((pct / 100) * width)
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`
  const what = i.state === 'queued' ? `queued, position ${i.queuePosition ?? '?'}` : i.state
  const text = `${bar} ${String(pct).padStart(3)}%  ${what}  ${i.progressMessage}`
  return text.slice(0, Math.max(20, columns - 1))
}
