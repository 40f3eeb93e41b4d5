import { StudiopoolError, type StudiopoolClient } from '../client/index.js'

export interface ProgressLine {
  readonly state: string
  readonly progress: number
  readonly progressMessage: string
  readonly queuePosition: number | null
}

/**
 * `studiopool request --wait`: follows the session's progress stream (`GET
 * /api/v1/instances/{id}/events`, server-sent events) until it is ready, instead of polling. A
 * stream that closes early (an API restart, a proxy's idle timeout) is reopened with the last event
 * id; the session ending while it starts is `SESSION_ENDED`, and the deadline `TIMEOUT`.
 */
export async function followProgress(
  c: StudiopoolClient,
  instanceId: string,
  userId: string,
  timeoutSeconds: number,
  show: (line: ProgressLine) => void,
): Promise<void> {
  const deadline = Date.now() + timeoutSeconds * 1000
  let lastEventId: string | undefined
  let state = 'requested'
  for (let reopen = 0; ; reopen++) {
    const left = deadline - Date.now()
    if (left <= 0) throw new StudiopoolError(0, 'TIMEOUT', `not ready after ${timeoutSeconds}s (state ${state})`)
    try {
      for await (const ev of c.sessionEvents(instanceId, { userId, lastEventId, signal: AbortSignal.timeout(left) })) {
        lastEventId = ev.id ?? lastEventId
        if (ev.event === 'progress') {
          state = ev.data.state
          show({ ...ev.data, progressMessage: ev.data.message })
        } else if (ev.event === 'ready') {
          show({ state: 'ready', progress: 100, progressMessage: 'ready', queuePosition: null })
          return
        } else throw new StudiopoolError(0, 'SESSION_ENDED', `the session ended while starting: ${ev.data.reason}`)
      }
    } catch (err) {
      // The API's own answers stand (404, 403…); unreachable, cut off or a 5xx of a restarting API: again.
      if (err instanceof StudiopoolError && err.code !== 'UNREACHABLE' && err.status < 500) throw err
      if ((err as Error).name === 'TimeoutError' || Date.now() >= deadline)
        throw new StudiopoolError(0, 'TIMEOUT', `not ready after ${timeoutSeconds}s (state ${state})`)
    }
    // The stream closed or failed before the session was ready: reopen shortly, up to the deadline.
    await new Promise((r) => setTimeout(r, Math.min(2000, 250 * (reopen + 1))))
  }
}
