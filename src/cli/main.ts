import { Command, Option } from 'commander'
import { StartupRefusedError } from '../domain/errors.js'
import { ApiClient, ApiError } from './client.js'
import { renderProgress, formatTable } from './format.js'
import { homesCommand } from './homes.js'
import { packageVersion } from './version.js'

// The configuration loader (TypeBox, YAML) and the HTTP client (undici) load when a command needs them,
// so that `--version` and `--help` start quickly.
const configLoader = () => import('../config/load.js')

/**
 * The studiopool binary: `serve` runs the server; every other command is a thin client of the REST
 * API (parse → client → print). Human output by default, `--json` for scripts.
 */
const program = new Command()
program
  .name('studiopool')
  .description('Pools of RStudio, Jupyter and Shiny sessions behind an owner-only gateway')
  .version(packageVersion(), '-V, --version', 'print the version')
  .showHelpAfterError()

program
  .command('serve')
  .description('run the server (API, gateway, worker and dashboard on one port, or one --role)')
  .option('-c, --config <file>', 'configuration file (default ./studiopool.yaml when present)')
  .addOption(
    new Option('--role <role>', 'run one role only').choices(['all', 'api', 'gateway', 'worker']).default('all'),
  )
  .option('--host <host>', 'listen address (default 127.0.0.1)')
  .option('--port <port>', 'listen port (default 8080)', (v) => parsePort(v))
  .option('--data-dir <dir>', 'data directory (default ./data)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent')
  .action(
    async (o: {
      config?: string
      role: 'all' | 'api' | 'gateway' | 'worker'
      host?: string
      port?: number
      dataDir?: string
      logLevel?: string
    }) => {
      const { ConfigError, loadConfig } = await configLoader()
      let config
      try {
        config = loadConfig({
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
      const { start } = await import('../main.js')
      const running = await start({
        config,
        role: o.role,
        faults: testFaults(process.env.STUDIOPOOL_TEST_FAULT),
        onBootstrapKey: (key, url) => {
          process.stdout.write(
            [
              '',
              '  studiopool created the first admin key. It is shown once; keep it safe:',
              '',
              `    ${key}`,
              '',
              '  Try it:',
              `    curl -s -H 'Authorization: Bearer ${key}' -H 'content-type: application/json' \\`,
              `      -d '{"command":"REQUEST_SESSION","payload":{"userId":"alice"}}' ${url}/api/commands`,
              '',
              `  Or: STUDIOPOOL_KEY=${key} npx studiopool request --user alice --wait`,
              '',
            ].join('\n') + '\n',
          )
        },
      }).catch(refuseToStart)
      // Name only what this role serves (issue 9 item 10).
      const u = running.url
      const serves =
        o.role === 'gateway'
          ? `sessions ${u}/s/…, health ${u}/healthz, ${u}/readyz, ${u}/metrics`
          : o.role === 'worker'
            ? `health only: ${u}/healthz, ${u}/readyz, ${u}/metrics`
            : `dashboard ${u}/, API docs ${u}/api/docs`
      process.stdout.write(`studiopool ${o.role === 'all' ? '' : `(${o.role}) `}listening on ${u}  (${serves})\n`)
      let stopping = false
      const stop = async (signal: string) => {
        if (stopping) return
        stopping = true
        process.stdout.write(`studiopool: ${signal}, shutting down\n`)
        // Graceful (issue 9 item 9): in-flight requests get server.shutdownGrace, then the rest is closed.
        const timer = setTimeout(() => process.exit(1), running.config.server.shutdownGraceMs + 15_000)
        timer.unref()
        await running.shutdown(running.config.server.shutdownGraceMs)
        process.exit(0)
      }
      process.on('SIGINT', () => void stop('SIGINT'))
      process.on('SIGTERM', () => void stop('SIGTERM'))
    },
  )

/** A damaged or emptied store that was in use: say what and what to do, exit 2 (issue 9 item 5). */
function refuseToStart(err: unknown): never {
  if (err instanceof StartupRefusedError) {
    process.stderr.write(`${err.message}\n`)
    process.exit(err.exitCode)
  }
  throw err
}

interface ClientOpts {
  url: string
  key?: string
  json?: boolean
}
const withClient = (cmd: Command) =>
  cmd
    .option('--url <url>', 'server URL (env STUDIOPOOL_URL)', process.env.STUDIOPOOL_URL ?? 'http://127.0.0.1:8080')
    .option('--key <key>', 'API key (env STUDIOPOOL_KEY)', process.env.STUDIOPOOL_KEY)
    .option('--json', 'machine-readable output')
const client = (o: ClientOpts) => new ApiClient(o.url, o.key)
const out = (o: ClientOpts, data: unknown, human: () => string): void => {
  process.stdout.write((o.json ? JSON.stringify(data, null, 2) : human()) + '\n')
}

interface InstanceOut {
  instanceId: string
  url: string
  state: string
  userId: string | null
  template: string
  progress: number
  progressMessage: string
  queuePosition: number | null
  lastActivityAt: string | null
  createdAt: string | null
  failureReason: string | null
}

program
  .command('recover')
  .description(
    "rebuild instances, owners and open assignments from the providers' labels into an empty store (server stopped)",
  )
  .option('-c, --config <file>', 'configuration file (default ./studiopool.yaml when present)')
  .option('--data-dir <dir>', 'data directory (default ./data)')
  .option('--force', 'also when the store is not empty: add only the instances it does not know')
  .option('--json', 'print the report as JSON')
  .action(async (o: { config?: string; dataDir?: string; force?: boolean; json?: boolean }) => {
    const { loadConfig } = await configLoader()
    const config = loadConfig({ file: o.config, overrides: { dataDir: o.dataDir } })
    const { runRecover } = await import('../recover-main.js')
    let report
    try {
      report = await runRecover(config, { force: o.force })
    } catch (err) {
      if ((err as { code?: string }).code === 'CONFLICT') {
        process.stderr.write(`studiopool recover: ${(err as Error).message}\n`)
        process.exit(2)
      }
      throw err
    }
    if (o.json) {
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
    } else {
      const owned = report.instances.filter((i) => i.ownerId).length
      process.stdout.write(
        `studiopool recover: ${report.listed} resources listed; ${report.instances.length} instances recovered (${owned} assigned, ${report.instances.length - owned} free), ${report.assignments} open assignments, ${report.skipped.length} skipped\n`,
      )
      if (report.instances.length)
        process.stdout.write(
          `\n${formatTable(report.instances as unknown as Record<string, unknown>[], ['instanceId', 'template', 'provider', 'ref', 'state', 'ownerId'])}\n`,
        )
      if (report.skipped.length)
        process.stdout.write(
          `\nskipped:\n${formatTable(report.skipped as unknown as Record<string, unknown>[], ['ref', 'provider', 'instanceId', 'reason'])}\n`,
        )
      for (const f of report.failedProviders)
        process.stdout.write(
          `\nprovider ${f.provider} could not be listed (its resources were not recovered): ${f.error}\n`,
        )
    }
    if (report.failedProviders.length) process.exitCode = 3
  })

withClient(program.command('request'))
  .description('request a session for a user (REQUEST_SESSION)')
  .requiredOption('-u, --user <userId>', 'the user the session is for')
  .option('-t, --template <name>', 'template (default: the server default)')
  .option('-w, --wait', 'wait until the session is ready, showing progress')
  .option('--timeout <seconds>', 'give up waiting after this long', (v) => Number(v), 900)
  .action(async (o: ClientOpts & { user: string; template?: string; wait?: boolean; timeout: number }) => {
    const c = client(o)
    const grant = await c.call<{
      instanceId: string
      url: string
      state: string
      queuePosition: number | null
      outcome: string
    }>('POST', '/api/v1/sessions', { userId: o.user, ...(o.template ? { template: o.template } : {}) })
    if (!o.wait)
      return out(
        o,
        grant,
        () =>
          `${grant.instanceId}  ${grant.state}${grant.queuePosition ? ` (queue position ${grant.queuePosition})` : ''}  [${grant.outcome}]\n${grant.url}`,
      )
    const deadline = Date.now() + o.timeout * 1000
    const tty = process.stderr.isTTY && !o.json
    let last = ''
    for (;;) {
      const { instance } = await c.call<{ instance: InstanceOut }>(
        'GET',
        `/api/v1/instances/${grant.instanceId}?userId=${encodeURIComponent(o.user)}`,
      )
      const line = renderProgress(instance, tty ? (process.stderr.columns ?? 80) : 80)
      if (tty) process.stderr.write(`\r\x1b[2K${line}`)
      else if (line !== last && !o.json) process.stderr.write(line + '\n')
      last = line
      if (instance.state === 'ready') break
      if (['failed', 'terminated', 'stopping'].includes(instance.state)) {
        if (tty) process.stderr.write('\n')
        throw new ApiError(
          0,
          'SESSION_ENDED',
          `the session ended while starting: ${instance.failureReason ?? instance.state}`,
        )
      }
      if (Date.now() > deadline)
        throw new ApiError(0, 'TIMEOUT', `not ready after ${o.timeout}s (state ${instance.state})`)
      await new Promise((r) => setTimeout(r, 500))
    }
    if (tty) process.stderr.write('\n')
    out(o, grant, () => `ready: open ${grant.url}`)
  })

withClient(program.command('status'))
  .description('list assigned instances, or show one')
  .argument('[instanceId]')
  .option('-u, --user <userId>', 'owner (needed with requester keys)')
  .action(async (id: string | undefined, o: ClientOpts & { user?: string }) => {
    const c = client(o)
    if (id) {
      const r = await c.call<{ instance: InstanceOut }>(
        'GET',
        `/api/v1/instances/${encodeURIComponent(id)}${o.user ? `?userId=${encodeURIComponent(o.user)}` : ''}`,
      )
      return out(o, r, () =>
        Object.entries(r.instance)
          .map(([k, v]) => `${k.padEnd(16)} ${v ?? ''}`)
          .join('\n'),
      )
    }
    const r = await c.call<{ instances: InstanceOut[] }>('GET', '/api/v1/instances')
    out(o, r, () =>
      formatTable(r.instances as unknown as Record<string, unknown>[], [
        'instanceId',
        'template',
        'state',
        'userId',
        'progress',
        'lastActivityAt',
      ]),
    )
  })

withClient(program.command('delete'))
  .description('end a session and terminate its instance')
  .argument('<instanceId>')
  .action(async (id: string, o: ClientOpts) => {
    const r = await client(o).call('DELETE', `/api/v1/instances/${encodeURIComponent(id)}`)
    out(o, r, () => `deleted ${id}`)
  })

withClient(program.command('history'))
  .description('who had which instance, when, why it ended and what it cost')
  .option('-u, --user <userId>')
  .option('-t, --template <name>')
  .option('-n, --limit <n>', 'rows', '50')
  .option('--csv', 'CSV output')
  .action(async (o: ClientOpts & { user?: string; template?: string; limit: string; csv?: boolean }) => {
    const q = new URLSearchParams({
      limit: o.limit,
      ...(o.user ? { userId: o.user } : {}),
      ...(o.template ? { template: o.template } : {}),
      ...(o.csv ? { format: 'csv' } : {}),
    })
    const r = await client(o).call<{ history: Record<string, unknown>[] } | string>('GET', `/api/v1/history?${q}`)
    if (typeof r === 'string') return void process.stdout.write(r)
    out(o, r, () =>
      formatTable(r.history, [
        'instanceId',
        'template',
        'userId',
        'startedAt',
        'endedAt',
        'durationSeconds',
        'endReason',
        'cost',
      ]),
    )
  })

const keys = program.command('keys').description('manage API keys (admin)')
withClient(keys.command('create'))
  .argument('<name>')
  .addOption(new Option('-r, --role <role>').choices(['requester', 'proxy', 'admin']).default('requester'))
  .action(async (name: string, o: ClientOpts & { role: string }) => {
    const r = await client(o).call<{ id: string; key: string; role: string }>('POST', '/api/v1/keys', {
      name,
      role: o.role,
    })
    out(o, r, () => `created ${o.role} key "${name}" (id ${r.id}). Shown once:\n${r.key}`)
  })
withClient(keys.command('list')).action(async (o: ClientOpts) => {
  const r = await client(o).call<{ keys: Record<string, unknown>[] }>('GET', '/api/v1/keys')
  out(o, r, () => formatTable(r.keys, ['id', 'name', 'role', 'source', 'createdAt', 'lastUsedAt', 'revokedAt']))
})
withClient(keys.command('revoke'))
  .argument('<id>')
  .action(async (id: string, o: ClientOpts) => {
    const r = await client(o).call('DELETE', `/api/v1/keys/${encodeURIComponent(id)}`)
    out(o, r, () => `revoked ${id}`)
  })

/**
 * Fault injection for the recovery tests only (kill the server at a precise point). Never set in
 * production; the server says so loudly when it is.
 */
function testFaults(spec: string | undefined) {
  if (!spec) return undefined
  process.stderr.write(`studiopool: TEST FAULT INJECTION ACTIVE: ${spec}\n`)
  const die = () => {
    process.kill(process.pid, 'SIGKILL')
  }
  if (spec === 'kill-after-create') return { afterProviderCreate: die }
  if (spec === 'kill-before-create') return { beforeProviderCreate: die }
  throw new Error(`unknown STUDIOPOOL_TEST_FAULT "${spec}"`)
}

function parsePort(v: string): number {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`not a port: ${v}`)
  return n
}

program.addCommand(homesCommand())

program.parseAsync(process.argv).catch(async (err: unknown) => {
  // A configuration the server can only judge at start (a provider's needs): exit 2, as for load errors.
  const { ConfigError } = await configLoader()
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`)
    process.exit(2)
  }
  if (err instanceof ApiError) {
    process.stderr.write(`\nstudiopool: ${err.code}: ${err.message}\n`)
    process.exit(err.status === 0 ? 1 : err.status >= 500 ? 3 : 2)
  }
  process.stderr.write(`studiopool: ${(err as Error).message}\n`)
  process.exit(1)
})
