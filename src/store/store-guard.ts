import type { Logger } from 'pino'
import { StoreUnavailableError } from '../domain/errors.js'
import { isConnectionLoss, uniqueViolation, unavailableReason } from './dialects.js'
import type { Store, StoreHealth } from './store.js'

/** Methods that change the store; a failure of one of these makes /readyz fail for a while. */
const WRITES = new Set<string>([
  'insertInstance',
  'updateInstance',
  'deleteInstance',
  'recordActivity',
  'openAssignment',
  'closeAssignment',
  'audit',
  'insertKey',
  'revokeKey',
  'touchKey',
  'consumeNonce',
  'setMeta',
  'setMetaIfAbsent',
  'recordStateSamples',
  'writeCost',
  'purgeStateSamples',
  'transaction',
  'withPoolLock',
  'assignWarm',
  'claimWarm',
  'probeWrite',
  'migrate',
])
/** Not translated: their own callers expect the driver's behaviour (tryLead reports false itself; close is best effort). */
const PASS_THROUGH = new Set<string>(['close', 'health', 'tryLead', 'fenced', 'leaderEpoch', 'watchInstances'])

/**
 * Wraps a store so that "the store is unavailable" reaches callers as one error,
 * StoreUnavailableError (503 STORE_UNAVAILABLE with Retry-After), whatever the driver said
 * (issue 9 item 4: a stopped Postgres gave 500 INTERNAL and a logged stack per request; a full
 * SQLite disk gave 500). Every other error (constraints, LiveInstanceExistsError, bugs) passes
 * unchanged. It also remembers the last failed write for /readyz, logs each outage once, when
 * it starts and when the store answers again, not once per request, and while the connection is
 * lost lets one call at a time try it and fails the rest at once.
 */
/** A constraint the store enforced: an answer, not an outage. */
function isConstraintError(err: Error): boolean {
  const code = (err as { code?: unknown }).code
  return (
    uniqueViolation(err) !== undefined ||
    (typeof code === 'string' && (code.startsWith('23') || code.startsWith('SQLITE_CONSTRAINT'))) ||
    (err as { statusCode?: unknown }).statusCode !== undefined
  )
}

// eslint-disable-next-line max-lines-per-function -- one closure over the outage state (down, cutOff, probing) that every wrapped method shares
export function guardStore(inner: Store, opts: { log: Logger; now?: () => number }): Store {
  const now = opts.now ?? Date.now
  let lastWriteError: StoreHealth['lastWriteError']
  let lastError: StoreHealth['lastError']
  let down = false
  // While Postgres is unreachable, one call at a time tries it (the probe); the others fail at once
  // instead of each waiting out the connect or read timeout (issue 9 item 4: "fast").
  let cutOff: string | undefined
  let probing = false

  const failed = (method: string, err: unknown): never => {
    // During an outage (the last call failed as unavailable, none succeeded since), an error the
    // driver words differently (a pooled client dying half-way, a wrapped timeout) is the same outage.
    const reason =
      unavailableReason(err) ??
      (down && err instanceof Error && !isConstraintError(err)
        ? `store unavailable (${err.message.slice(0, 80)})`
        : undefined)
    if (reason === undefined) {
      // A constraint, a conflict, a bug: the store answered, so its connection is not lost.
      cutOff = undefined
      throw err
    }
    if (isConnectionLoss(err)) cutOff = reason
    const at = now()
    lastError = { at, reason }
    if (WRITES.has(method)) lastWriteError = { at, reason }
    if (!down) {
      down = true
      opts.log.error({ reason, method }, `store unavailable: ${reason}`)
    }
    throw new StoreUnavailableError(`the store is unavailable (${reason}); try again shortly`, { cause: err })
  }
  const succeeded = () => {
    cutOff = undefined
    if (down) {
      down = false
      opts.log.warn('store available again')
    }
  }

  const health = (): StoreHealth => ({ lastWriteError, lastError })
  const wrapped = new Map<PropertyKey, unknown>()
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'health') return health
      const value: unknown = Reflect.get(target, prop, target)
      if (typeof value !== 'function' || typeof prop !== 'string' || PASS_THROUGH.has(prop))
        return typeof value === 'function' ? value.bind(target) : value
      let fn = wrapped.get(prop)
      if (!fn) {
        const method = value as (...args: unknown[]) => unknown
        fn = (...args: unknown[]) => {
          if (cutOff !== undefined && probing)
            return Promise.reject(new StoreUnavailableError(`the store is unavailable (${cutOff}); try again shortly`))
          const probe = cutOff !== undefined
          if (probe) probing = true
          const settle = () => {
            if (probe) probing = false
          }
          let result: unknown
          try {
            // The target, not the proxy, is `this`: the store's #private fields live on it.
            result = method.apply(target, args)
          } catch (err) {
            settle()
            return failed(prop, err)
          }
          if (result instanceof Promise) {
            return result.then(
              (v) => {
                settle()
                succeeded()
                return v
              },
              (err: unknown) => {
                settle()
                return failed(prop, err)
              },
            )
          }
          settle()
          return result
        }
        wrapped.set(prop, fn)
      }
      return fn
    },
  })
}
