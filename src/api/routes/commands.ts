import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type, type TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { AppError, ValidationError } from '../../domain/errors.js'
import type { Authenticate } from '../auth.js'
import { RawJson } from '../coalesce.js'
import type { ApiDeps, Caller } from '../context.js'
import { DeletePayload, deleteInstance } from '../commands/delete-instance.js'
import { GetStatusPayload, getStatus } from '../commands/get-status.js'
import { RequestSessionPayload, requestSession } from '../commands/request-session.js'

type CommandHandler = (deps: ApiDeps, caller: Caller, payload: never) => Promise<unknown>
interface CommandDef {
  readonly schema: TSchema
  readonly check: ReturnType<typeof TypeCompiler.Compile>
  readonly run: CommandHandler
}
const def = (schema: TSchema, run: CommandHandler): CommandDef => ({ schema, check: TypeCompiler.Compile(schema), run })

/** The seed's commands (contract 1). REQUEST_SESSION is REQUEST_RSTUDIO under a neutral name. */
const COMMANDS: Record<string, CommandDef> = {
  REQUEST_RSTUDIO: def(RequestSessionPayload, requestSession as CommandHandler),
  REQUEST_SESSION: def(RequestSessionPayload, requestSession as CommandHandler),
  GET_STATUS: def(GetStatusPayload, getStatus as CommandHandler),
  DELETE: def(DeletePayload, deleteInstance as CommandHandler),
}

const CommandBody = Type.Object(
  {
    command: Type.String({ minLength: 1, maxLength: 64, description: Object.keys(COMMANDS).join(' | ') }),
    payload: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { additionalProperties: true },
)

/** Contract 1: the command protocol, at POST / (the seed's address, hidden from the docs) and POST /api/commands. */
export async function commandRoutes(scope: FastifyInstance, deps: ApiDeps, authenticate: Authenticate): Promise<void> {
  const app = scope.withTypeProvider<TypeBoxTypeProvider>()
  for (const [url, hide] of [
    ['/', true],
    ['/api/commands', false],
  ] as const) {
    app.post(
      url,
      {
        schema: {
          summary: 'Seed command protocol (REQUEST_RSTUDIO, REQUEST_SESSION, GET_STATUS, DELETE)',
          tags: ['commands'],
          body: CommandBody,
          response: {
            400: { $ref: 'Error#' },
            401: { $ref: 'Error#' },
            403: { $ref: 'Error#' },
            404: { $ref: 'Error#' },
            503: { $ref: 'Error#' },
          },
          ...(hide ? { hide } : {}),
        },
        onRequest: authenticate,
      },
      async (req, reply) => {
        const { command } = req.body
        const cmd = Object.prototype.hasOwnProperty.call(COMMANDS, command) ? COMMANDS[command] : undefined
        if (!cmd)
          throw new AppError(
            'UNKNOWN_COMMAND',
            `unknown command "${String(command).slice(0, 64)}"; known: ${Object.keys(COMMANDS).join(', ')}`,
          )
        const payload = req.body.payload ?? {}
        if (!cmd.check.Check(payload)) {
          const details = [...cmd.check.Errors(payload)]
            .slice(0, 20)
            .map((e) => ({ path: `/payload${e.path}`, message: e.message }))
          throw new ValidationError(`invalid payload for ${command}`, details)
        }
        const result = await cmd.run(deps, { principal: req.principal! }, payload as never)
        if (result instanceof RawJson) return reply.type('application/json; charset=utf-8').send(result.bytes)
        return result
      },
    )
  }
}
