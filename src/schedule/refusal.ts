/**
 * Outside an `unavailable` schedule a template turns new visitors away (issue 13's schedules, issue
 * 14's shared templates): 503 OUTSIDE_SCHEDULE naming the next opening, with the seconds until it.
 * Pure: the pool (in one process) and a split-mode gateway decide the same way from the same file.
 */
import type { SharedRefusal } from '../domain/shared.js'
import { nextOpening, scheduleAt, type Schedule } from './schedule.js'

export function outsideScheduleRefusal(
  template: string,
  schedule: Schedule | null | undefined,
  now: number,
): SharedRefusal | null {
  if (!schedule || scheduleAt(schedule, now).available) return null
  const opens = nextOpening(schedule, now)
  const when = opens === null ? 'it has no opening' : `the next opening is ${new Date(opens).toISOString()}`
  return {
    status: 503,
    code: 'OUTSIDE_SCHEDULE',
    message: `template "${template}" is outside its schedule; ${when}`,
    ...(opens === null ? {} : { retryAfterSeconds: Math.max(1, Math.ceil((opens - now) / 1000)) }),
  }
}
