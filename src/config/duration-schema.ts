import { Type } from '@sinclair/typebox'
import { parseDuration } from '../domain/duration.js'

const DURATION_PATTERN = '^\\s*\\d+(\\.\\d+)?\\s*(ms|s|m|h|d)?\\s*$'

/** A duration (`90s`, `30m`, `12h`, `1d`, or milliseconds), decoded to milliseconds. */
export const Duration = (fallback: string) =>
  Type.Transform(
    Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: DURATION_PATTERN })], {
      description: 'a duration: 90s, 30m, 12h, 1d, or milliseconds',
      default: fallback,
    }),
  )
    .Decode((v) => parseDuration(v) ?? 0) // the pattern admits only what parseDuration reads
    .Encode((ms) => ms)
