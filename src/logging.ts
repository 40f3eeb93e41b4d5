import { Writable } from 'node:stream'
import pino, { type Logger } from 'pino'

/**
 * The server's logs (issue 17): JSON lines (pino) when stdout is not a terminal — journald, a pod
 * log, a file — and a short human form on a terminal; never both in one stream, and no plain-text
 * banner between JSON lines (the banners are log lines too). `STUDIOPOOL_LOG_FORMAT=json|pretty`
 * forces one. Secrets are redacted wherever they might appear.
 */
export type LogFormat = 'json' | 'pretty'

export function logFormat(env: NodeJS.ProcessEnv = process.env, tty = process.stdout.isTTY === true): LogFormat {
  const f = env.STUDIOPOOL_LOG_FORMAT
  if (f === 'json' || f === 'pretty') return f
  return tty ? 'pretty' : 'json'
}

const REDACT = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'key',
  'secret',
  'token',
  '*.key',
  '*.secret',
  '*.token',
]

export function createLogger(
  level: string,
  opts: { format?: LogFormat; destination?: NodeJS.WritableStream } = {},
): Logger {
  const format = opts.format ?? logFormat()
  const dest = opts.destination ?? process.stdout
  const options = { level, redact: { paths: REDACT, censor: '[redacted]' } }
  return format === 'pretty' ? pino(options, prettyStream(dest)) : pino(options, dest)
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' }
const COLOURS: Record<number, string> = { 40: '\x1b[33m', 50: '\x1b[31m', 60: '\x1b[31m' }
const OMIT = new Set(['level', 'time', 'pid', 'hostname', 'msg'])

/** One JSON line → `12:00:01 INFO  message key=value …` (colour on warnings and errors). */
export function prettyLine(json: string, colour = true): string {
  let o: Record<string, unknown>
  try {
    o = JSON.parse(json) as Record<string, unknown>
  } catch {
    return json
  }
  const level = Number(o.level)
  const time = new Date(Number(o.time)).toISOString().slice(11, 19)
  const name = (LEVELS[level] ?? String(level)).padEnd(5)
  const fields = Object.entries(o)
    .filter(([k]) => !OMIT.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
  const c = colour ? (COLOURS[level] ?? '') : ''
  return `${time} ${c}${name}${c ? '\x1b[0m' : ''} ${String(o.msg ?? '')}${fields.length ? `  ${fields.join(' ')}` : ''}`
}

function prettyStream(dest: NodeJS.WritableStream): Writable {
  let rest = ''
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      const lines = (rest + chunk.toString()).split('\n')
      rest = lines.pop() ?? ''
      for (const l of lines) if (l) dest.write(prettyLine(l) + '\n')
      done()
    },
  })
}
