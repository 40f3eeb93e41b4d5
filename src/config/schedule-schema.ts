import { Type, type StaticDecode } from '@sinclair/typebox'
import { parseDuration } from '../domain/duration.js'
import { CLOCK_PATTERN, DAYS_PATTERN, parseClock, parseDays, type Schedule } from '../schedule/schedule.js'
import type { WarmPoolPolicy } from '../schedule/warm-target.js'
import { Duration } from './duration-schema.js'

/**
 * A template's `schedule` and `warmPool` (issue 13; docs/cost.md "Schedules", "Predictive warm
 * pool"): their schemas and their decoding into what src/schedule/ reads.
 */

export const WARM_POOL_DEFAULTS = {
  targetHitRate: 0.95,
  lookback: '14d', // history the forecast reads
} as const

const ScheduleValuesSchema = {
  minFree: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000 })),
  maxInstances: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
}
export const ScheduleSchema = Type.Object(
  {
    /** An IANA time zone (`Europe/Berlin`); checked in config/finish.ts. */
    timezone: Type.String({ minLength: 1, maxLength: 64, default: 'UTC' }),
    windows: Type.Array(
      Type.Object(
        {
          /** `mon-fri`, `sat,sun`, `daily`, `weekdays`, `weekends`: the days a window starts on. */
          days: Type.String({ pattern: DAYS_PATTERN, default: 'daily' }),
          /** Local wall-clock time, `HH:MM`; `to` ≤ `from` crosses midnight; `24:00` ends the day. */
          from: Type.String({ pattern: CLOCK_PATTERN }),
          to: Type.String({ pattern: CLOCK_PATTERN }),
          ...ScheduleValuesSchema,
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 50 },
    ),
    /** Outside every window: other values (default: the template's), or `unavailable`. */
    outside: Type.Optional(
      Type.Union([Type.Literal('unavailable'), Type.Object(ScheduleValuesSchema, { additionalProperties: false })]),
    ),
  },
  { additionalProperties: false },
)
export const WarmPoolSchema = Type.Object(
  {
    mode: Type.Union([Type.Literal('predictive'), Type.Literal('forecast-only')], { default: 'predictive' }),
    targetHitRate: Type.Number({ minimum: 0.5, maximum: 0.999, default: WARM_POOL_DEFAULTS.targetHitRate }),
    lookback: Duration(WARM_POOL_DEFAULTS.lookback),
    /** Floor and ceiling of the predicted free instances (the schedule's floor and the caps still hold). */
    min: Type.Integer({ minimum: 0, maximum: 10_000, default: 0 }),
    max: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
    /** The zone whose weekdays and hours the forecast's seasons follow; default the schedule's, else UTC. */
    timezone: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  },
  { additionalProperties: false },
)

type ScheduleInput = StaticDecode<typeof ScheduleSchema>
type WarmPoolInput = StaticDecode<typeof WarmPoolSchema>

/** A template's schedule as the pool reads it (src/schedule/schedule.ts); values default to the template's. */
export function decodeSchedule(s: ScheduleInput, minFree: number, maxInstances: number): Schedule {
  const values = (v: { minFree?: number; maxInstances?: number }) => ({
    minFree: v.minFree ?? minFree,
    maxInstances: v.maxInstances ?? maxInstances,
  })
  return {
    timezone: s.timezone,
    windows: s.windows.map((w) => ({
      days: parseDays(w.days),
      fromMin: parseClock(w.from),
      toMin: parseClock(w.to),
      ...values(w),
    })),
    outside: s.outside === 'unavailable' ? 'unavailable' : values(s.outside ?? {}),
  }
}

export function decodeWarmPool(
  w: WarmPoolInput | undefined,
  auto: boolean,
  maxInstances: number,
  schedule: ScheduleInput | undefined,
): (WarmPoolPolicy & { readonly timezone: string }) | null {
  if (!w && !auto) return null
  const v = w ?? { mode: 'predictive' as const, targetHitRate: WARM_POOL_DEFAULTS.targetHitRate, min: 0 }
  return {
    mode: v.mode,
    targetHitRate: v.targetHitRate,
    lookbackMs: w?.lookback ?? (parseDuration(WARM_POOL_DEFAULTS.lookback) as number),
    min: v.min,
    max: w?.max ?? maxInstances,
    timezone: w?.timezone ?? schedule?.timezone ?? 'UTC',
  }
}
