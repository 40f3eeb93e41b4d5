/**
 * Application errors. Every error that reaches a client carries a stable `code`
 * (listed once in docs/errors.md) and an HTTP status; anything else is a bug and
 * is answered as a generic 500 without details.
 *
 * Codes follow architecture.md contract 1 (`INVALID_REQUEST`, `POOL_FULL`, …) rather than
 * the conventions' (docs/architecture.md) `ERR_*` prefix, because the command protocol's clients already match on them.
 */
export const ERROR_CODES = {
  INVALID_REQUEST: 400,
  INVALID_CURSOR: 400,
  UNKNOWN_COMMAND: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  LOGIN_DISABLED: 403,
  BUDGET_EXCEEDED: 403,
  NOT_FOUND: 404,
  REQUEST_TIMEOUT: 408,
  CONFLICT: 409,
  TOO_LARGE: 413,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  PROVIDER_ERROR: 502,
  UPSTREAM_FAILED: 502,
  POOL_FULL: 503,
  PROVIDER_UNAVAILABLE: 503,
  TEMPLATE_UNAVAILABLE: 503,
  OUTSIDE_SCHEDULE: 503,
  STORE_UNAVAILABLE: 503,
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export interface ErrorDetail {
  readonly path?: string
  readonly message: string
}

export class AppError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number
  readonly details?: readonly ErrorDetail[]
  /** Seconds, sent as `Retry-After` where set. */
  readonly retryAfter?: number

  constructor(
    code: ErrorCode,
    message: string,
    opts: { details?: readonly ErrorDetail[]; cause?: unknown; retryAfter?: number } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = new.target.name
    this.code = code
    this.statusCode = ERROR_CODES[code]
    this.details = opts.details
    this.retryAfter = opts.retryAfter
  }

  toJSON(): { code: ErrorCode; message: string; details?: readonly ErrorDetail[] } {
    return this.details
      ? { code: this.code, message: this.message, details: this.details }
      : { code: this.code, message: this.message }
  }
}

export class ValidationError extends AppError {
  constructor(message: string, details?: readonly ErrorDetail[]) {
    super('INVALID_REQUEST', message, { details })
  }
}

export class NotFoundError extends AppError {
  constructor(message: string) {
    super('NOT_FOUND', message)
  }
}

export class ConflictError extends AppError {
  constructor(message: string) {
    super('CONFLICT', message)
  }
}

export class ForbiddenError extends AppError {
  constructor(message = 'not allowed') {
    super('FORBIDDEN', message)
  }
}

export class UnauthorizedError extends AppError {
  constructor(message = 'missing or invalid API key') {
    super('UNAUTHORIZED', message)
  }
}

/**
 * Why a provider call failed, for the pool's backoff and circuit breaker (issue 9):
 * `transient` (throttling, 5xx, network, no capacity right now) is retried after a backoff;
 * `auth` (denied action, rejected credentials), `config` (invalid image, subnet, parameter),
 * `missing` (image, program or directory not found) and `quota` (an account limit) will not
 * go away by themselves, and open the template's breaker; `unknown` counts as non-transient.
 */
export const PROVIDER_FAILURE_KINDS = ['transient', 'auth', 'config', 'missing', 'quota', 'unknown'] as const
export type ProviderFailureKind = (typeof PROVIDER_FAILURE_KINDS)[number]

/** A provider call failed. `retryable` tells the worker whether to try again; `kind` says why. */
export class ProviderError extends AppError {
  readonly provider: string
  readonly retryable: boolean
  readonly kind: ProviderFailureKind
  constructor(
    provider: string,
    message: string,
    opts: {
      retryable?: boolean
      cause?: unknown
      code?: 'PROVIDER_ERROR' | 'PROVIDER_UNAVAILABLE'
      kind?: ProviderFailureKind
      retryAfter?: number
    } = {},
  ) {
    super(opts.code ?? 'PROVIDER_ERROR', message, { cause: opts.cause, retryAfter: opts.retryAfter })
    this.provider = provider
    this.retryable = opts.retryable ?? false
    this.kind = opts.kind ?? (this.retryable ? 'transient' : opts.code === 'PROVIDER_UNAVAILABLE' ? 'auth' : 'unknown')
  }
}

/**
 * The failure kind of any error a create threw: a ProviderError's own, else from a Node error code
 * (a provider that let one through: EACCES on an instance directory, ENOENT for a program).
 */
export function failureKind(err: unknown): ProviderFailureKind {
  if (err instanceof ProviderError) return err.kind
  const code = (err as { code?: unknown } | null)?.code
  switch (code) {
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return 'auth'
    case 'ENOENT':
    case 'ENOTDIR':
      return 'missing'
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EMFILE':
    case 'ENFILE':
      return 'quota'
    case 'ECONNRESET':
    case 'ECONNREFUSED':
    case 'ETIMEDOUT':
    case 'EAI_AGAIN':
    case 'EAGAIN':
      return 'transient'
    default:
      return 'unknown'
  }
}

export class PoolFullError extends AppError {
  constructor(message: string, retryAfter = 30) {
    super('POOL_FULL', message, { retryAfter })
  }
}

/**
 * The store cannot answer now: Postgres refused, timed out or went away; SQLite's disk is full,
 * failing or locked. A client should retry after `retryAfter` seconds (issue 9 item 4).
 */
export class StoreUnavailableError extends AppError {
  constructor(message: string, opts: { cause?: unknown; retryAfter?: number } = {}) {
    super('STORE_UNAVAILABLE', message, { cause: opts.cause, retryAfter: opts.retryAfter ?? 5 })
  }
}

/**
 * The server refuses to start, and says why and what to do (a damaged or emptied store whose data
 * directory shows it was in use). The CLI prints the message and exits with `exitCode`.
 */
export class StartupRefusedError extends Error {
  readonly exitCode = 2
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError
}
