/**
 * Schedules with a controlled clock (issue 13): time zones, a DST change in both directions,
 * windows crossing midnight, and what the pool is told to keep warm ahead of an opening.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { loadConfig } from '../../src/config/load.js'
import {
  effectiveSchedule,
  nextClosing,
  nextOpening,
  parseDays,
  scheduleAt,
  type Schedule,
} from '../../src/schedule/schedule.js'

const at = (iso: string) => Date.parse(iso)
const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString())

/** Office hours in Berlin, closed (and unavailable) outside. */
function berlin(): Schedule {
  const cfg = loadConfig({
    text: `
templates:
  shiny:
    provider: fake
    minFree: 1
    maxInstances: 10
    schedule:
      timezone: Europe/Berlin
      windows: [{ days: mon-fri, from: '08:00', to: '18:00', minFree: 3, maxInstances: 20 }]
      outside: unavailable
`,
    env: {},
    cwd: '/tmp',
  })
  return cfg.templates[0]!.schedule!
}

describe('schedule: days, zones, values', () => {
  test('day lists read as the operator writes them, ranges wrap', () => {
    assert.deepEqual(parseDays('mon-fri'), [0, 1, 2, 3, 4])
    assert.deepEqual(parseDays('fri-mon'), [0, 4, 5, 6])
    assert.deepEqual(parseDays('sat, sun'), [5, 6])
    assert.deepEqual(parseDays('mon,wed-thu'), [0, 2, 3])
    assert.deepEqual(parseDays('weekends'), [5, 6])
  })

  test('a window is open in its own zone: 08:00 Berlin is 07:00 UTC in winter, 06:00 in summer', () => {
    const s = berlin()
    // Wednesday 2026-01-14, CET (UTC+1).
    assert.equal(scheduleAt(s, at('2026-01-14T06:59:00Z')).open, false)
    assert.equal(scheduleAt(s, at('2026-01-14T07:00:00Z')).open, true)
    assert.equal(scheduleAt(s, at('2026-01-14T16:59:00Z')).open, true)
    assert.equal(scheduleAt(s, at('2026-01-14T17:00:00Z')).open, false)
    // Wednesday 2026-07-15, CEST (UTC+2).
    assert.equal(scheduleAt(s, at('2026-07-15T05:59:00Z')).open, false)
    assert.equal(scheduleAt(s, at('2026-07-15T06:00:00Z')).open, true)
    const inside = scheduleAt(s, at('2026-07-15T10:00:00Z'))
    assert.deepEqual([inside.available, inside.minFree, inside.maxInstances], [true, 3, 20])
    const outside = scheduleAt(s, at('2026-07-15T20:00:00Z'))
    assert.deepEqual([outside.available, outside.minFree, outside.maxInstances], [false, 0, 0])
    // Saturday: closed all day.
    assert.equal(scheduleAt(s, at('2026-07-18T10:00:00Z')).open, false)
  })

  test('the next opening skips the weekend: Friday evening → Monday 08:00 local', () => {
    const s = berlin()
    assert.equal(iso(nextOpening(s, at('2026-01-16T18:30:00Z'))), '2026-01-19T07:00:00.000Z')
    assert.equal(iso(nextClosing(s, at('2026-01-19T09:00:00Z'))), '2026-01-19T17:00:00.000Z')
  })

  test('outside values default to the template’s own when `outside` is absent', () => {
    const cfg = loadConfig({
      text: `
templates:
  lab:
    provider: fake
    minFree: 1
    maxInstances: 7
    schedule: { timezone: America/New_York, windows: [{ days: daily, from: '09:00', to: '17:00', minFree: 4 }] }
`,
      env: {},
      cwd: '/tmp',
    })
    const s = cfg.templates[0]!.schedule!
    const night = scheduleAt(s, at('2026-03-02T03:00:00Z'))
    assert.deepEqual([night.available, night.minFree, night.maxInstances], [true, 1, 7])
    const day = scheduleAt(s, at('2026-03-02T15:00:00Z')) // 10:00 EST
    assert.deepEqual([day.minFree, day.maxInstances], [4, 7])
  })

  test('a bad zone or an empty window is refused at load with its path', () => {
    assert.throws(
      () =>
        loadConfig({
          text: `templates: { a: { provider: fake, schedule: { timezone: Mars/Olympus, windows: [{ from: '08:00', to: '08:00' }] } } }`,
          env: {},
          cwd: '/tmp',
        }),
      (err: Error) => /schedule\/timezone/.test(err.message) && /schedule\/windows\/0/.test(err.message),
    )
  })
})

describe('schedule: DST and midnight', () => {
  test('spring forward: a 02:30 start in Berlin opens at 03:00 CEST (the skipped hour), and the day is an hour short', () => {
    const s: Schedule = {
      timezone: 'Europe/Berlin',
      windows: [{ days: [6], fromMin: 150, toMin: 360, minFree: 2, maxInstances: 5 }], // Sun 02:30–06:00
      outside: 'unavailable',
    }
    // 2026-03-29 is the spring-forward Sunday: 02:00 CET jumps to 03:00 CEST (01:00Z).
    const opens = nextOpening(s, at('2026-03-28T22:00:00Z'))
    assert.equal(iso(opens), '2026-03-29T01:00:00.000Z') // 03:00 CEST
    assert.equal(scheduleAt(s, at('2026-03-29T00:59:00Z')).open, false) // 01:59 CET
    assert.equal(iso(nextClosing(s, opens!)), '2026-03-29T04:00:00.000Z') // 06:00 CEST: 3 h open, not 3.5
  })

  test('fall back: a window over the repeated hour is open for both passes of it', () => {
    const s: Schedule = {
      timezone: 'Europe/Berlin',
      windows: [{ days: [6], fromMin: 120, toMin: 180, minFree: 1, maxInstances: 5 }], // Sun 02:00–03:00
      outside: 'unavailable',
    }
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00Z); 02:00–03:00 local happens twice.
    assert.equal(iso(nextOpening(s, at('2026-10-24T22:00:00Z'))), '2026-10-25T00:00:00.000Z') // 02:00 CEST
    assert.equal(scheduleAt(s, at('2026-10-25T00:30:00Z')).open, true) // 02:30 CEST
    assert.equal(scheduleAt(s, at('2026-10-25T01:30:00Z')).open, true) // 02:30 CET
    assert.equal(iso(nextClosing(s, at('2026-10-25T00:00:00Z'))), '2026-10-25T02:00:00.000Z') // 03:00 CET: two hours
  })

  test('a window crossing midnight belongs to the day it starts on', () => {
    const s: Schedule = {
      timezone: 'UTC',
      windows: [{ days: [4], fromMin: 22 * 60, toMin: 2 * 60, minFree: 2, maxInstances: 4 }], // Fri 22:00–02:00
      outside: { minFree: 0, maxInstances: 1 },
    }
    assert.equal(scheduleAt(s, at('2026-01-16T21:59:00Z')).open, false) // Fri
    assert.equal(scheduleAt(s, at('2026-01-16T23:00:00Z')).minFree, 2) // Fri night
    assert.equal(scheduleAt(s, at('2026-01-17T01:59:00Z')).open, true) // Sat early morning
    assert.equal(scheduleAt(s, at('2026-01-17T02:00:00Z')).open, false)
    assert.equal(scheduleAt(s, at('2026-01-16T01:00:00Z')).open, false) // Fri early: Thursday is not listed
    assert.equal(iso(nextOpening(s, at('2026-01-17T03:00:00Z'))), '2026-01-23T22:00:00.000Z')
  })

  test('warming ahead: within the lead before an opening the window’s floor and cap already apply, new sessions not yet', () => {
    const s = berlin()
    const open = at('2026-01-19T07:00:00Z') // Monday 08:00 CET
    const lead = 90_000
    const early = effectiveSchedule(s, open - 5 * 60_000, lead)
    assert.deepEqual([early.available, early.minFree], [false, 0])
    const warming = effectiveSchedule(s, open - 60_000, lead)
    assert.deepEqual([warming.available, warming.minFree, warming.maxInstances], [false, 3, 20])
    const opened = effectiveSchedule(s, open, lead)
    assert.deepEqual([opened.available, opened.minFree], [true, 3])
  })
})
