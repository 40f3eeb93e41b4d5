/**
 * Prices (docs/cost.md "Prices"): what one hour of an instance of a template costs, on-demand and
 * spot. Pure: the configuration is read by config/, the price table parsed by price-table.ts, live
 * prices (if any) are handed in. Nothing here does I/O.
 *
 * Where a template's price comes from, first match wins:
 * 1. the template's own `price: {onDemandPerHour, spotPerHour}` (the old `pricePerHour` is the on-demand one);
 * 2. a live spot price for its instance type (EC2 DescribeSpotPriceHistory), for spot instances;
 * 3. the price table (`cost.priceTable`, ec2instances.info's instances.json) for its instance type;
 * 4. the provider's rate per CPU-hour and GiB-hour (`cost.rates.<provider>`) times the template's requests;
 * 5. nothing: 0, and the source says `none` (the usage report shows it, so a missing price is visible).
 */

import type { Market } from '../domain/cost-segment.js'

export { MARKETS, type Market } from '../domain/cost-segment.js'

export type PriceSource = 'template' | 'live' | 'table' | 'rates' | 'none'

/** One price in force: per hour, in the pool's currency, for one market. */
export interface Rate {
  readonly perHour: number
  readonly market: Market
  readonly source: PriceSource
}

/** One instance type's prices in the table (per hour); spot is absent when the table has none. */
export interface TablePrice {
  readonly onDemand: number | null
  readonly spot: number | null
}

/** What a template says about its own price (config `templates.<name>.price`). */
export interface TemplatePrice {
  readonly onDemandPerHour: number | null
  readonly spotPerHour: number | null
  /** The market its instances run on, unless an instance says otherwise (its `market` tag). */
  readonly market: Market | null
  /** The instance type looked up in the price table (default: the provider settings' `instanceType`). */
  readonly instanceType: string | null
}

/** The template's requests: CPUs and memory, for rate-based prices. */
export interface Requests {
  readonly cpus: number | null
  readonly memoryGiB: number | null
}

/** A rate per CPU-hour and per GiB-hour (config `cost.rates.<provider>`). */
export interface ResourceRates {
  readonly cpuHour: number
  readonly gibHour: number
}

/** The part of a template pricing reads (config TemplateConfig satisfies it). */
export interface PricedTemplate {
  readonly name: string
  readonly provider: string
  readonly pricePerHour: number
  readonly price?: TemplatePrice
  readonly resources?: { readonly cpus: number | null; readonly memoryGiB: number | null }
  readonly settings: Readonly<Record<string, unknown>>
}

export interface PriceBook {
  readonly table: ReadonlyMap<string, TablePrice>
  readonly rates: Readonly<Record<string, ResourceRates>>
  /** Live spot prices by instance type (per hour), when a source provides them. */
  readonly liveSpot?: (instanceType: string) => number | undefined
}

const round6 = (n: number) => Math.round(n * 1e6) / 1e6

/** The market a template's instances run on: its price's `market`, else the provider's spot switch (`spot.enabled`). */
export function templateMarket(t: PricedTemplate): Market {
  if (t.price?.market) return t.price.market
  const spot = t.settings['spot']
  if (spot && typeof spot === 'object' && (spot as Record<string, unknown>)['enabled'] === true) return 'spot'
  return 'on-demand'
}

/** The instance type to look up in the price table: the price's own, else the provider settings' `instanceType`. */
export function instanceTypeOf(t: PricedTemplate): string | null {
  if (t.price?.instanceType) return t.price.instanceType
  const v = t.settings['instanceType']
  return typeof v === 'string' && v ? v : null
}

/** The price per hour of one instance of `t` on `market` (see the order at the top of this file). */
export function rateFor(t: PricedTemplate, market: Market, book: PriceBook): Rate {
  const own = market === 'spot' ? (t.price?.spotPerHour ?? null) : null
  const onDemand = t.price?.onDemandPerHour ?? (t.pricePerHour > 0 ? t.pricePerHour : null)
  if (own !== null) return { perHour: own, market, source: 'template' }
  // A spot instance without a spot price of its own: live, then the table's spot, before any on-demand price.
  const type = instanceTypeOf(t)
  if (market === 'spot' && type) {
    const live = book.liveSpot?.(type)
    if (live !== undefined) return { perHour: live, market, source: 'live' }
    const row = book.table.get(type)
    if (row?.spot !== null && row?.spot !== undefined) return { perHour: row.spot, market, source: 'table' }
  }
  if (onDemand !== null) return { perHour: onDemand, market, source: 'template' }
  const row = type ? book.table.get(type) : undefined
  if (row?.onDemand !== null && row?.onDemand !== undefined) return { perHour: row.onDemand, market, source: 'table' }
  const rates = book.rates[t.provider]
  const req = requestsOf(t)
  if (rates && (req.cpus !== null || req.memoryGiB !== null)) {
    const perHour = round6((req.cpus ?? 0) * rates.cpuHour + (req.memoryGiB ?? 0) * rates.gibHour)
    return { perHour, market, source: 'rates' }
  }
  return { perHour: 0, market, source: 'none' }
}

/**
 * A template's CPU and memory requests, provider-agnostic: the template's own `resources`, else
 * what its provider settings say under the common names (`cpus`; `memory` as `512m`, `2g`, `4096M`,
 * or a number of MiB as Slurm writes it; Kubernetes-style `resources.requests.cpu/memory`).
 */
export function requestsOf(t: PricedTemplate): Requests {
  const s = t.settings
  const k8s = ((s['resources'] as Record<string, unknown> | undefined)?.['requests'] ?? {}) as Record<string, unknown>
  const cpus = t.resources?.cpus ?? parseCpus(s['cpus']) ?? parseCpus(k8s['cpu'])
  const memoryGiB = t.resources?.memoryGiB ?? parseMemoryGiB(s['memory']) ?? parseMemoryGiB(k8s['memory'])
  return { cpus: cpus ?? null, memoryGiB: memoryGiB ?? null }
}

/** `2`, `1.5`, `"500m"` (Kubernetes millicores). */
export function parseCpus(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v
  if (typeof v !== 'string') return undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*(m?)\s*$/.exec(v)
  if (!m) return undefined
  return m[2] ? Number(m[1]) / 1000 : Number(m[1])
}

const MEM_UNITS: Record<string, number> = { k: 1 / 1024 / 1024, m: 1 / 1024, g: 1, t: 1024 }

/** `512m`, `2g`, `2Gi`, `4096M`, `1T`; a bare number is MiB (Slurm's `--mem`). In GiB. */
export function parseMemoryGiB(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v / 1024
  if (typeof v !== 'string') return undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt])?(i|ib|b)?\s*$/i.exec(v)
  if (!m) return undefined
  const unit = (m[2] ?? 'm').toLowerCase()
  return round6(Number(m[1]) * MEM_UNITS[unit]!)
}
