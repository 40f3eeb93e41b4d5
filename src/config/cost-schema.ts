/**
 * The cost and budget sections of the configuration (docs/cost.md), beside the template's own
 * `price` and `resources` (config/schema.ts). `cost.priceTable` is read by config/finish.ts.
 */
import { Type } from '@sinclair/typebox'
import { parseDuration } from '../domain/duration.js'
import { Duration } from './duration-schema.js'
import { parseMemoryGiB, type TablePrice } from '../cost/prices.js'
import type { BudgetPeriod, BudgetSpec } from '../cost/budgets.js'

const DURATION_PATTERN = '^\\s*\\d+(\\.\\d+)?\\s*(ms|s|m|h|d)?\\s*$'
const CURRENCY_PATTERN = '^[A-Z]{3}$'

const noEncode = (): never => {
  throw new Error('a decoded configuration is not encoded back')
}

const Rates = Type.Object(
  {
    /** Price of one CPU for one hour. */
    cpuHour: Type.Number({ minimum: 0, default: 0 }),
    /** Price of one GiB of memory for one hour. */
    gibHour: Type.Number({ minimum: 0, default: 0 }),
  },
  { additionalProperties: false },
)

export const Cost = Type.Transform(
  Type.Object(
    {
      /** ISO 4217 code every price and budget is in. */
      currency: Type.String({ pattern: CURRENCY_PATTERN, default: 'USD' }),
      /** ec2instances.info's instances.json (or a file of the same shape), relative to the working directory. */
      priceTable: Type.Optional(
        Type.Object(
          {
            path: Type.String({ minLength: 1 }),
            region: Type.String({ minLength: 1, default: 'us-east-1' }),
            os: Type.String({ minLength: 1, default: 'linux' }),
          },
          { additionalProperties: false },
        ),
      ),
      /** Per provider (`local`, `docker`, `slurm`, `kubernetes`…): a price per CPU-hour and GiB-hour. */
      rates: Type.Record(Type.String({ minLength: 1 }), Rates, { default: {} }),
      /** Group → its users, for group attribution and group budgets (sessions requested over the API carry no groups). */
      groups: Type.Record(Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 })), { default: {} }),
      /**
       * How long cost segments and shared-usage rows of ended, purged instances are kept (13 months:
       * a year's reports and the month before); `0` keeps them for ever.
       */
      retain: Duration('395d'),
    },
    { additionalProperties: false, default: {} },
  ),
)
  .Decode((c) => ({
    currency: c.currency,
    priceTable: c.priceTable ?? (null as { path: string; region: string; os: string } | null),
    /** Filled in from `priceTable` by config/finish.ts: instance type → prices per hour. */
    table: {} as Record<string, TablePrice>,
    rates: c.rates as Record<string, { cpuHour: number; gibHour: number }>,
    groups: c.groups as Record<string, string[]>,
    /** 0: kept for ever. */
    retainMs: c.retain,
  }))
  .Encode(noEncode)

const Budget = Type.Object(
  {
    /** Shown in messages and on the dashboard; default `<scope> <name> <period>`. */
    label: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    scope: Type.Union([
      Type.Literal('user'),
      Type.Literal('group'),
      Type.Literal('template'),
      Type.Literal('requester'),
      Type.Literal('pool'),
    ]),
    /** The user, group, template or requester; absent: each one has a budget of this amount (not for `pool`). */
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    amount: Type.Number({ exclusiveMinimum: 0 }),
    /** Must be `cost.currency` when given (no conversion is done). */
    currency: Type.Optional(Type.String({ pattern: CURRENCY_PATTERN })),
    /** `day`, `week` (from Monday), `month`: calendar periods in UTC; a duration (`7d`, `12h`): the last that long. */
    period: Type.Union(
      [Type.Literal('day'), Type.Literal('week'), Type.Literal('month'), Type.String({ pattern: DURATION_PATTERN })],
      { default: 'month' },
    ),
    /** `soft` warns; `hard` also refuses new sessions (403 BUDGET_EXCEEDED). */
    mode: Type.Union([Type.Literal('soft'), Type.Literal('hard')], { default: 'soft' }),
    /** The fraction of the amount at which a warning is given (1 = only when exceeded). */
    warnAt: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.8 }),
    /** Hard budgets: stop the sessions it covers this long after it is exceeded (warned meanwhile). */
    stopRunning: Type.Optional(
      Type.Object(
        { grace: Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: DURATION_PATTERN })]) },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
)

export const Budgets = Type.Transform(Type.Array(Budget, { default: [], maxItems: 1000 }))
  .Decode((list) =>
    list.map((b, i): BudgetSpec => {
      const period: BudgetPeriod =
        b.period === 'day' || b.period === 'week' || b.period === 'month'
          ? { kind: b.period }
          : { kind: 'rolling', ms: parseDuration(b.period) ?? 0 }
      const periodText = typeof b.period === 'string' ? b.period : `${b.period}ms`
      return {
        id: `${b.scope}/${b.name ?? '*'}/${periodText}/${b.mode}/${i}`,
        label: b.label ?? `${b.scope}${b.name ? ` ${b.name}` : ''} ${periodText}`,
        scope: b.scope,
        name: b.scope === 'pool' ? null : (b.name ?? null),
        amount: b.amount,
        currency: b.currency ?? null,
        period,
        mode: b.mode,
        warnAt: b.warnAt,
        stopGraceMs: b.stopRunning ? (parseDuration(b.stopRunning.grace) ?? 0) : null,
      }
    }),
  )
  .Encode(noEncode)

const MEMORY_PATTERN = '^\\s*\\d+(\\.\\d+)?\\s*([kmgtKMGT](i|ib|b|B|iB)?)?\\s*$'

/** docs/cost.md "Prices": the template's own prices per hour, its market, the price table's instance type. */
export const TemplatePrice = Type.Optional(
  Type.Object(
    {
      onDemandPerHour: Type.Optional(Type.Number({ minimum: 0 })),
      spotPerHour: Type.Optional(Type.Number({ minimum: 0 })),
      market: Type.Optional(Type.Union([Type.Literal('on-demand'), Type.Literal('spot')])),
      instanceType: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    },
    { additionalProperties: false },
  ),
)

/** What one instance asks for, for `cost.rates` (default: read from the provider settings' cpus/memory). */
export const TemplateResources = Type.Optional(
  Type.Object(
    {
      cpus: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
      /** `512m`, `2g`, `4Gi`; a bare number is MiB. */
      memory: Type.Optional(
        Type.Union([Type.Number({ exclusiveMinimum: 0 }), Type.String({ pattern: MEMORY_PATTERN })]),
      ),
    },
    { additionalProperties: false },
  ),
)

/** A template's decoded `price` and `resources` (nulls where unset). */
export function decodeTemplateCost(t: {
  price?: { onDemandPerHour?: number; spotPerHour?: number; market?: 'on-demand' | 'spot'; instanceType?: string }
  resources?: { cpus?: number; memory?: number | string }
}) {
  return {
    price: {
      onDemandPerHour: t.price?.onDemandPerHour ?? (null as number | null),
      spotPerHour: t.price?.spotPerHour ?? (null as number | null),
      market: t.price?.market ?? (null as 'on-demand' | 'spot' | null),
      instanceType: t.price?.instanceType ?? (null as string | null),
    },
    resources: {
      cpus: t.resources?.cpus ?? (null as number | null),
      memoryGiB:
        t.resources?.memory === undefined ? (null as number | null) : (parseMemoryGiB(t.resources.memory) ?? null),
    },
  }
}
