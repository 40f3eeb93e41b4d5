/**
 * The price table: ec2instances.info's `instances.json` (the shape MLiy priced instances from), one
 * object per instance type with `pricing[region][os] = {ondemand: "0.0116", spot_avg: "0.0035", …}`
 * as strings of USD per hour. Only the fields read here matter; the rest of each object is ignored.
 * Pure: the caller reads the file (config/finish.ts) and reports the problems.
 */
import type { TablePrice } from './prices.js'

export interface PriceTableOptions {
  readonly region: string
  /** `linux` (default), `mswin`, `rhel`…: the key under the region. */
  readonly os: string
}

const num = (v: unknown): number | null => {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v
  if (typeof v !== 'string' || !/^\d+(\.\d+)?$/.test(v.trim())) return null
  return Number(v)
}

/**
 * Parses the table's JSON text into instance type → on-demand and spot price per hour. Spot is
 * `spot_avg`, else `spot_min`; an instance type without a price in the region is left out. Throws
 * an Error with a readable message on text that is not such a table.
 */
export function parsePriceTable(text: string, opts: PriceTableOptions): Map<string, TablePrice> {
  let rows: unknown
  try {
    rows = JSON.parse(text)
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`, { cause: err })
  }
  if (!Array.isArray(rows)) throw new Error('expected an array of instance types (ec2instances.info instances.json)')
  const out = new Map<string, TablePrice>()
  for (const r of rows as unknown[]) {
    if (!r || typeof r !== 'object') continue
    const o = r as Record<string, unknown>
    const type = o['instance_type']
    const pricing = o['pricing'] as Record<string, Record<string, Record<string, unknown>>> | undefined
    if (typeof type !== 'string' || !pricing || typeof pricing !== 'object') continue
    const p = pricing[opts.region]?.[opts.os]
    if (!p || typeof p !== 'object') continue
    const onDemand = num(p['ondemand'])
    const spot = num(p['spot_avg']) ?? num(p['spot_min'])
    if (onDemand === null && spot === null) continue
    out.set(type, { onDemand, spot })
  }
  if (out.size === 0) throw new Error(`no instance type has a price for region "${opts.region}" and os "${opts.os}"`)
  return out
}
