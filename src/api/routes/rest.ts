import type { FastifyInstance } from 'fastify'
import type { ApiDeps } from '../context.js'
import { historyRoutes } from './history.js'
import { instanceRoutes, sessionRoutes } from './instances.js'
import { keyRoutes } from './keys.js'
import { poolRoutes } from './pool.js'

export { historyCsv } from './history.js'

/**
 * REST API v1 (contract 2): the same operations as the command protocol, as resources. One
 * function per area; the caller's scope authenticates (`req.principal` is set on every route).
 */
export async function restRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  await sessionRoutes(app, deps)
  await instanceRoutes(app, deps)
  await poolRoutes(app, deps)
  await historyRoutes(app, deps)
  await keyRoutes(app, deps)
}
