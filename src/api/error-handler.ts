import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { isAppError, type AppError } from '../domain/errors.js'

const REFUSALS = new Set(['POOL_FULL', 'RATE_LIMITED', 'FORBIDDEN', 'UNAUTHORIZED', 'TEMPLATE_UNAVAILABLE', 'CONFLICT'])

/** One envelope for every error: `{error: {code, message, details?}}`; never a stack trace. */
export function errorHandler(err: FastifyError | AppError | Error, req: FastifyRequest, reply: FastifyReply): void {
  if (isAppError(err)) {
    if (err.retryAfter) void reply.header('retry-after', String(err.retryAfter))
    if (err.statusCode === 401) void reply.header('www-authenticate', 'Bearer')
    // Refusals (a full pool, a rate limit, a wrong key or role, another user's session) are lifecycle events too (issue 17).
    if (REFUSALS.has(err.code))
      req.log.info(
        { component: 'lifecycle', event: 'refused', code: err.code, status: err.statusCode, reason: err.message },
        'request refused',
      )
    // A store outage is logged once by the store guard when it begins, not once per request.
    else if (err.statusCode >= 500 && err.code !== 'STORE_UNAVAILABLE')
      req.log.warn({ code: err.code, msg: err.message }, 'request failed')
    void reply.code(err.statusCode).send({ error: err.toJSON() })
    return
  }
  const fe = err as FastifyError
  if (fe.validation) {
    const details = fe.validation
      .slice(0, 20)
      .map((v) => ({ path: `/${fe.validationContext ?? 'body'}${v.instancePath}`, message: v.message ?? 'invalid' }))
    void reply
      .code(400)
      .send({ error: { code: 'INVALID_REQUEST', message: `invalid ${fe.validationContext ?? 'request'}`, details } })
    return
  }
  const status = fe.statusCode ?? 500
  if (status === 413) {
    void reply.code(413).send({ error: { code: 'TOO_LARGE', message: 'request body is too large' } })
    return
  }
  if (status >= 400 && status < 500) {
    // Malformed JSON, wrong content type, bad headers: the client's fault, said plainly.
    const message =
      fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
        ? 'send JSON (content-type: application/json)'
        : fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY'
          ? 'the body is empty'
          : 'malformed request body (not valid JSON)'
    void reply.code(400).send({ error: { code: 'INVALID_REQUEST', message } })
    return
  }
  req.log.error({ err }, 'unhandled error')
  void reply.code(500).send({ error: { code: 'INTERNAL', message: 'internal error' } })
}
