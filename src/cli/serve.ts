import { Command, Option } from 'commander'
import type { Logger } from 'pino'
import { StartupRefusedError } from '../domain/errors.js'

type Role = 'all' | 'api' | 'gateway' | 'worker'
interface ServeOpts {
  config?: string
  role: Role
  host?: string
  port?: number
  dataDir?: string
  logLevel?: string
  degraded?: boolean
}

/**
 * `studiopool serve`: load the configuration (exit 2 listing every problem), start, say where it
 * listens, stop gracefully on SIGTERM/SIGINT. Everything it says is a log line (JSON when stdout is
 * not a terminal, a short human form on one); the banners use their own `info` logger so they show
 * whatever `server.logLevel` is.
 */
export function serveCommand(): Command {
  return new Command('serve')
    .description('run the server (API, gateway, worker and dashboard on one port, or one --role)')
    .option('-c, --config <file>', 'configuration file (default ./studiopool.yaml when present)')
    .addOption(
      new Option('--role <role>', 'run one role only').choices(['all', 'api', 'gateway', 'worker']).default('all'),
    )
    .option('--host <host>', 'listen address (default 127.0.0.1)')
    .option('--port <port>', 'listen port (default 8080)', (v) => parsePort(v))
    .option('--data-dir <dir>', 'data directory (default ./data)')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent')
    .option(
      '--degraded',
      'start even when templates cannot serve because of their configuration (unknown provider, bad provider settings, missing program): they answer 503 TEMPLATE_UNAVAILABLE',
    )
    .action(serve)
}

async function serve(o: ServeOpts): Promise<void> {
  const { ConfigError, loadConfigDetailed } = await import('../config/load.js')
  const { createLogger } = await import('../logging.js')
  let loaded
  try {
    loaded = loadConfigDetailed({
      file: o.config,
      overrides: { host: o.host, port: o.port, dataDir: o.dataDir, logLevel: o.logLevel },
    })
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      process.exit(2)
    }
    throw err
  }
  const log = createLogger(loaded.config.server.logLevel)
  const banner = createLogger('info')
  const { start } = await import('../main.js')
  const running = await start({
    config: loaded.config,
    role: o.role,
    log,
    refuseUnavailable: !o.degraded,
    configWarnings: loaded.warnings,
    faults: testFaults(process.env.STUDIOPOOL_TEST_FAULT, banner),
    onBootstrapKey: (_key, url, file) => {
      banner.warn(
        { keyFile: file },
        `first admin key written to ${file} (mode 0600): read it once, keep it safe, then delete the file. Try: STUDIOPOOL_KEY=$(cat ${file}) studiopool request --url ${url} --user alice --wait`,
      )
    },
  }).catch(refuseToStart)
  if (o.degraded) banner.warn('started --degraded: templates that cannot serve answer 503 TEMPLATE_UNAVAILABLE')
  // Name only what this role serves (issue 9 item 10).
  const u = running.url
  const serves =
    o.role === 'gateway'
      ? `sessions ${u}/s/…, health ${u}/healthz, ${u}/readyz, ${u}/metrics`
      : o.role === 'worker'
        ? `health only: ${u}/healthz, ${u}/readyz, ${u}/metrics`
        : `dashboard ${u}/, API docs ${u}/api/docs`
  banner.info(
    { url: u, role: o.role },
    `studiopool ${o.role === 'all' ? '' : `(${o.role}) `}listening on ${u}  (${serves})`,
  )
  let stopping = false
  const stop = async (signal: string) => {
    if (stopping) return
    stopping = true
    banner.info({ signal }, `studiopool: ${signal}, shutting down`)
    // Graceful (issue 9 item 9): in-flight requests get server.shutdownGrace, then the rest is closed.
    const timer = setTimeout(() => process.exit(1), running.config.server.shutdownGraceMs + 15_000)
    timer.unref()
    await running.shutdown(running.config.server.shutdownGraceMs)
    process.exit(0)
  }
  process.on('SIGINT', () => void stop('SIGINT'))
  process.on('SIGTERM', () => void stop('SIGTERM'))
}

/** A damaged or emptied store that was in use: say what and what to do, exit 2 (issue 9 item 5). */
export function refuseToStart(err: unknown): never {
  if (err instanceof StartupRefusedError) {
    process.stderr.write(`${err.message}\n`)
    process.exit(err.exitCode)
  }
  throw err
}

/**
 * Fault injection for the recovery tests only (kill the server at a precise point). Never set in
 * production; the server says so loudly when it is.
 */
function testFaults(spec: string | undefined, log: Logger) {
  if (!spec) return undefined
  log.warn(`studiopool: TEST FAULT INJECTION ACTIVE: ${spec}`)
  const die = () => {
    process.kill(process.pid, 'SIGKILL')
  }
  if (spec === 'kill-after-create') return { afterProviderCreate: die }
  if (spec === 'kill-before-create') return { beforeProviderCreate: die }
  throw new Error(`unknown STUDIOPOOL_TEST_FAULT "${spec}"`)
}

export function parsePort(v: string): number {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`not a port: ${v}`)
  return n
}
