import { Type, type TProperties } from '@sinclair/typebox'
import { ValidationError } from '../../domain/errors.js'
import { MAX_EPOCH_MS } from '../../domain/ids.js'
import { INSTANCE_STATES, type InstanceState } from '../../domain/instance.js'
import { InstanceId } from '../schemas.js'

/** The error responses most REST routes document. */
export const errorResponses = {
  400: { $ref: 'Error#' },
  401: { $ref: 'Error#' },
  403: { $ref: 'Error#' },
  404: { $ref: 'Error#' },
} as const
export const IdParams = Type.Object({ id: InstanceId })

/** A query string schema: these parameters and no others (query strings are strings: no coercion). */
export const Q = <P extends TProperties>(props: P) => Type.Object(props, { additionalProperties: false })
export const QStr = (description: string, pattern?: string) =>
  Type.Optional(Type.String({ description, maxLength: 200, ...(pattern ? { pattern } : {}) }))
export const QInt = (description: string) => Type.Optional(Type.String({ description, pattern: '^\\d{1,9}$' }))
export const QTime = (description: string) =>
  Type.Optional(Type.String({ description: `${description} (ISO 8601 or epoch ms)`, maxLength: 40 }))

export function parseTime(v: string | undefined, path: string): number | undefined {
  if (v === undefined) return undefined
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v)
  // Bounded: 1e20 made toISOString() throw RangeError, and Postgres' bigint refused 2^63 (issue 9 item 8).
  if (!Number.isFinite(n) || n < 0 || n > MAX_EPOCH_MS)
    throw new ValidationError('not a time', [
      { path, message: 'use ISO 8601 or epoch milliseconds between 1970 and 9999' },
    ])
  return n
}

export function parseStates(v: string | undefined): InstanceState[] | undefined {
  if (!v) return undefined
  const list = v.split(',')
  for (const s of list)
    if (!(INSTANCE_STATES as readonly string[]).includes(s))
      throw new ValidationError(`unknown state "${s}"`, [
        { path: '/querystring/state', message: `one of ${INSTANCE_STATES.join(', ')}` },
      ])
  return list as InstanceState[]
}
