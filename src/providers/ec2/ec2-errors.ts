import { ProviderError } from '../../domain/errors.js'

/**
 * Translation of AWS SDK errors into `ProviderError`, at the edge of the provider (architecture.md conventions "Errors").
 *
 * Three families matter to the pool:
 * - transient (throttling, 5xx, network): retried here with jittered exponential backoff, then surfaced
 *   as a retryable ProviderError so that the worker tries again on a later cycle;
 * - capacity (no spot or on-demand capacity, spot price too low): the provider falls back to on-demand
 *   where the template allows, else the instance fails with a reason a user can read;
 * - auth (denied action, expired credentials, no credentials): `PROVIDER_UNAVAILABLE`, naming the action.
 *
 * Messages never contain credentials: SDK errors carry the error code, AWS's message and request
 * metadata, never the signed request. The UnauthorizedOperation "encoded authorization failure
 * message" is dropped (it is long and only useful through sts:DecodeAuthorizationMessage).
 */

export const PROVIDER = 'ec2'

/** Throttling and server-side codes that are safe to retry (every call we make is idempotent). */
const THROTTLING_CODES = new Set([
  'RequestLimitExceeded',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'SlowDown',
  'EC2ThrottledException',
  'BandwidthLimitExceeded',
])

const SERVER_CODES = new Set([
  'InternalError',
  'InternalFailure',
  'ServiceUnavailable',
  'Unavailable',
  'ServerInternal',
])

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
])

/**
 * Capacity codes: the request was fine but AWS cannot place it now. For a spot request they trigger
 * the on-demand fallback. `Unsupported` is what RunInstances answers when an instance type has no
 * spot market in the zone.
 */
export const CAPACITY_CODES = new Set([
  'InsufficientInstanceCapacity',
  'InsufficientCapacity',
  'InsufficientHostCapacity',
  'InsufficientReservedInstanceCapacity',
  'InsufficientCapacityOnHost',
  'SpotMaxPriceTooLow',
  'MaxSpotInstanceCountExceeded',
  'Unsupported',
])

const AUTH_CODES = new Set([
  'UnauthorizedOperation',
  'AuthFailure',
  'ExpiredToken',
  'ExpiredTokenException',
  'RequestExpired',
  'InvalidClientTokenId',
  'SignatureDoesNotMatch',
  'OptInRequired',
  'Blocked',
  'PendingVerification',
  'MissingAuthenticationToken',
  'IncompleteSignature',
  'AccessDenied',
  'AccessDeniedException',
  'UnrecognizedClientException',
  // Raised by the SDK's own credential chain (no profile, no env, no instance role).
  'CredentialsProviderError',
  'TokenProviderError',
])

/** Account limits: only the operator (a limit increase) can fix them. */
const QUOTA_CODES = new Set([
  'InstanceLimitExceeded',
  'VcpuLimitExceeded',
  'VolumeLimitExceeded',
  'AddressLimitExceeded',
  'MaxSpotFleetRequestCountExceeded',
])

/** Instance ids we did not find: absent, not an error, for describe and terminate. */
export const NOT_FOUND_CODES = new Set(['InvalidInstanceID.NotFound', 'InvalidInstanceID.Malformed'])

/** The error code of an SDK (or network) error, or `''`. */
export function errorCode(err: unknown): string {
  if (typeof err !== 'object' || err === null) return ''
  const e = err as { name?: unknown; Code?: unknown; code?: unknown }
  // SDK v3 service errors carry the AWS code as `name`; `Code` on some protocol paths; Node network errors as `code`.
  if (typeof e.Code === 'string' && e.Code) return e.Code
  if (typeof e.name === 'string' && e.name && e.name !== 'Error' && e.name !== 'EC2ServiceException') return e.name
  if (typeof e.code === 'string' && e.code) return e.code
  return typeof e.name === 'string' ? e.name : ''
}

function httpStatus(err: unknown): number | undefined {
  const meta = (err as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata
  return typeof meta?.httpStatusCode === 'number' ? meta.httpStatusCode : undefined
}

function errorMessage(err: unknown): string {
  const m = (err as { message?: unknown } | null)?.message
  return typeof m === 'string' ? m : String(err)
}

export function isThrottling(err: unknown): boolean {
  return THROTTLING_CODES.has(errorCode(err)) || httpStatus(err) === 429
}

/** Worth another attempt: throttling, AWS 5xx and network trouble. */
export function isTransient(err: unknown): boolean {
  const code = errorCode(err)
  if (THROTTLING_CODES.has(code) || SERVER_CODES.has(code) || NETWORK_CODES.has(code)) return true
  if (code === 'TimeoutError' || code === 'RequestTimeout' || code === 'RequestTimeoutException') return true
  // Capacity errors come back as 500 from EC2 too; they are not transient in the retry sense.
  if (CAPACITY_CODES.has(code)) return false
  const status = httpStatus(err)
  if (status === 429) return true
  if (status !== undefined && status >= 500) return true
  return (err as { $fault?: unknown } | null)?.$fault === 'server' && !AUTH_CODES.has(code)
}

export function isCapacity(err: unknown): boolean {
  return CAPACITY_CODES.has(errorCode(err))
}

export function isAuth(err: unknown): boolean {
  const code = errorCode(err)
  if (AUTH_CODES.has(code)) return true
  const msg = errorMessage(err)
  return /Could not load credentials|Region is missing|credential is missing/i.test(msg)
}

export function isNotFound(err: unknown): boolean {
  return NOT_FOUND_CODES.has(errorCode(err))
}

/**
 * The IAM action named in an UnauthorizedOperation / AccessDenied message
 * ("… is not authorized to perform: iam:PassRole on resource: …"), else the action we called.
 */
export function deniedAction(err: unknown, calledAction: string): string {
  const m = /not authorized to perform:?\s+([a-z0-9-]+:[A-Za-z0-9*]+)/i.exec(errorMessage(err))
  return m ? m[1]! : calledAction
}

/** AWS's message without the encoded authorization blob, bounded in length. */
function cleanMessage(err: unknown): string {
  let msg = errorMessage(err)
    .replace(/\s*Encoded authorization failure message:.*$/s, '')
    .trim()
  if (msg.length > 300) msg = `${msg.slice(0, 297)}...`
  return msg
}

/** Operation names as IAM writes them, for messages. */
export function iamAction(operation: string): string {
  return `ec2:${operation}`
}

/**
 * The one place an SDK error becomes a ProviderError.
 * @param operation the EC2 API we called (`RunInstances`, …)
 */
export function toProviderError(err: unknown, operation: string, context = ''): ProviderError {
  if (err instanceof ProviderError) return err
  const code = errorCode(err)
  const where = context ? ` (${context})` : ''
  if (isAuth(err)) {
    const action = deniedAction(err, iamAction(operation))
    if (code === 'UnauthorizedOperation' || code === 'AccessDenied' || code === 'AccessDeniedException') {
      return new ProviderError(
        PROVIDER,
        `AWS denied ${action}${where}: the service's IAM policy does not allow it (see docs/aws.md)`,
        { code: 'PROVIDER_UNAVAILABLE', retryable: false, cause: err },
      )
    }
    const expired = /Expired/i.test(code)
    return new ProviderError(
      PROVIDER,
      expired
        ? `AWS credentials expired while calling ${action}${where} (${code}); refresh the profile, environment or instance role`
        : `AWS rejected the credentials for ${action}${where} (${code || 'no credentials'}): ${cleanMessage(err)}`,
      // Expired or missing credentials can come back (instance role refresh, SSO login), so the worker may retry.
      {
        code: 'PROVIDER_UNAVAILABLE',
        retryable: expired || code === 'CredentialsProviderError' || code === 'RequestExpired',
        cause: err,
      },
    )
  }
  if (isCapacity(err)) {
    return new ProviderError(PROVIDER, capacityReason(code, err, where), { retryable: true, cause: err })
  }
  if (isTransient(err)) {
    const kind = isThrottling(err) ? 'throttling' : 'failing'
    return new ProviderError(
      PROVIDER,
      `AWS is ${kind} ${iamAction(operation)}${where} (${code || 'HTTP ' + String(httpStatus(err) ?? '?')}); will retry later`,
      {
        retryable: true,
        cause: err,
      },
    )
  }
  if (code === 'IncorrectInstanceState') {
    return new ProviderError(
      PROVIDER,
      `${iamAction(operation)}${where}: the instance is not in a state that allows it: ${cleanMessage(err)}`,
      { retryable: true, cause: err },
    )
  }
  // Invalid AMI, security group, key pair, subnet, parameter: a configuration problem; AWS's message says which.
  // The kind feeds the pool's circuit breaker (issue 9): none of these goes away by retrying.
  const kind = QUOTA_CODES.has(code) ? 'quota' : /\.NotFound$/.test(code) ? 'missing' : 'config'
  return new ProviderError(
    PROVIDER,
    `${iamAction(operation)} failed${where}: ${code ? code + ': ' : ''}${cleanMessage(err)}`,
    { retryable: false, kind, cause: err },
  )
}

/** A sentence an analyst can read on the progress page. */
export function capacityReason(code: string, err: unknown, where = ''): string {
  switch (code) {
    case 'SpotMaxPriceTooLow':
      return `The spot price is above the template's maximum price${where}; no machine was started. Try again later.`
    case 'MaxSpotInstanceCountExceeded':
      return `The AWS account has reached its spot instance limit${where}; no machine was started.`
    case 'Unsupported':
      return `AWS does not offer this machine type in this way here${where}: ${cleanMessage(err)}`
    default:
      return `AWS has no free capacity for this machine type right now${where}; no machine was started. Try again in a few minutes.`
  }
}

export interface RetryOptions {
  /** Retries after the first attempt; total attempts = maxRetries + 1. */
  readonly maxRetries: number
  readonly baseDelayMs: number
  readonly maxDelayMs: number
  readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>
  /** [0, 1); injectable for tests. */
  readonly random: () => number
  readonly signal?: AbortSignal
  readonly onRetry?: (info: { operation: string; attempt: number; delayMs: number; code: string }) => void
}

/**
 * Runs `fn`, retrying transient errors with "full jitter" exponential backoff
 * (delay = random × min(max, base × 2^attempt); AWS Architecture Blog, "Exponential Backoff and Jitter").
 * Every call we wrap is idempotent (describe, terminate, stop, start, and RunInstances with a ClientToken).
 * Non-transient errors are rethrown untouched, for the caller to classify.
 */
export async function withRetries<T>(operation: string, fn: () => Promise<T>, o: RetryOptions): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    o.signal?.throwIfAborted()
    try {
      return await fn()
    } catch (err) {
      if (!isTransient(err)) throw err
      if (attempt >= o.maxRetries) {
        throw new ProviderError(
          PROVIDER,
          `AWS is ${isThrottling(err) ? 'throttling' : 'failing'} ${iamAction(operation)} (${errorCode(err) || 'transient error'}); gave up after ${attempt + 1} attempts, will retry later`,
          { retryable: true, cause: err },
        )
      }
      const cap = Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** attempt)
      const delayMs = Math.floor(o.random() * cap)
      o.onRetry?.({ operation, attempt: attempt + 1, delayMs, code: errorCode(err) })
      await o.sleep(delayMs, o.signal)
    }
  }
}

/** setTimeout as a promise that an AbortSignal cancels. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = (): void => {
      clearTimeout(t)
      reject(signal!.reason)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
