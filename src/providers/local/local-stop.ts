import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { ProviderError } from '../../domain/errors.js'
import { NAME, POLL_MS, type LocalInstanceRecord } from './local-record.js'
import { HAS_PROC, groupMembers, isRunningState, killGroup, markerOf, readProcStat } from './local-proc.js'

/**
 * Telling our session processes from others, and ending them. Only a process that carries the
 * instance's marker (`STUDIOPOOL_SCOPE` and `STUDIOPOOL_INSTANCE_ID` in its environment) and the
 * start time of its record is ever taken for ours.
 */

/** After SIGKILL the kernel needs a moment to tear the group down. */
const KILL_WAIT_MS = 3000

/** Running, with the start time recorded and this instance's marker: a forged record is never adopted. */
export function isAlive(rec: LocalInstanceRecord, scope: string): boolean {
  const stat = readProcStat(rec.pid)
  // 'unknown' (an exec under way) counts as ours: pid and start time already match.
  return (
    isRunningState(stat) &&
    stat.startTime === rec.startTime &&
    (!HAS_PROC || markerOf(rec.pid, scope, rec.instanceId) !== 'no')
  )
}

/** The marker once the leader's environment can be read (an exec in progress takes a moment); 'unknown' after half a second. */
async function settledMarker(rec: LocalInstanceRecord, scope: string): Promise<'yes' | 'no' | 'unknown'> {
  for (let i = 0; ; i++) {
    const m = markerOf(rec.pid, scope, rec.instanceId)
    if (m !== 'unknown' || i >= 20) return m
    await sleep(POLL_MS)
  }
}

/**
 * Ends the process group a record names, if it is still this instance's: a record that names
 * another process (forged, or a reused pid) cannot make the server kill it.
 */
export async function stopRecordedGroup(
  rec: LocalInstanceRecord,
  scope: string,
  graceMs: number,
  log: Logger,
): Promise<void> {
  const leader = readProcStat(rec.pid)
  // A live process with our pid but another start time means the pid was reused, which the kernel
  // only does once our group is gone entirely (the pgid holds the pid number): nothing to signal.
  const ours = !(leader && HAS_PROC && leader.startTime !== rec.startTime)
  if (!ours || groupMembers(rec.pgid).length === 0) return
  if (leader && HAS_PROC && (await settledMarker(rec, scope)) !== 'yes') {
    log.warn(
      { instanceId: rec.instanceId, pid: rec.pid },
      "local: the record names a process that is not this instance's; not signalling it",
    )
    return
  }
  await terminateGroup(rec.instanceId, rec.pgid, graceMs, log)
}

/** SIGTERM to the group, up to `graceMs` for it to go, then SIGKILL. Resolves when the group is gone. */
export async function terminateGroup(instanceId: string, pgid: number, graceMs: number, log: Logger): Promise<void> {
  if (groupMembers(pgid).length === 0) return
  if (graceMs > 0) {
    killGroup(pgid, 'SIGTERM')
    if (await groupGone(pgid, graceMs)) return
    log.info({ instanceId, pgid, graceMs }, 'local: group did not stop after SIGTERM; sending SIGKILL')
  }
  killGroup(pgid, 'SIGKILL')
  if (await groupGone(pgid, KILL_WAIT_MS)) return
  throw new ProviderError(NAME, `process group ${pgid} of instance ${instanceId} survived SIGKILL`, {
    retryable: true,
  })
}

/** Whether the group is gone within `ms` (polled). */
async function groupGone(pgid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (groupMembers(pgid).length === 0) return true
    await sleep(POLL_MS)
  }
  return false
}
