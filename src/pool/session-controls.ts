import type { SessionControls } from '../domain/pending-stop.js'
import type { PoolService } from './pool-service.js'

/**
 * The gateway's view of the pool for the warning banner (domain/pending-stop.ts SessionControls):
 * the status, "keep working" (activity written through), Stop and Suspend as the user's own
 * actions (audited as `session:<user>`). The gateway has checked that the user may use the session.
 */
export function createSessionControls(pool: PoolService): SessionControls {
  return {
    status: (id) => pool.stopStatus(id),
    keepWorking: (id) => pool.keepWorking(id),
    async stop(id, userId) {
      await pool.release(id, 'user', `session:${userId}`)
    },
    async suspend(id, userId) {
      await pool.suspend(id, `session:${userId}`)
    },
  }
}
