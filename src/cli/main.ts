import { Command, Option } from 'commander'
import { StudiopoolClient, StudiopoolError } from '../client/index.js'
import { renderProgress, formatTable } from './format.js'
import { followProgress } from './progress.js'
import { backupCommands } from './backup.js'
import { configCommand } from './config-cmd.js'
import { homesCommand } from './homes.js'
import { refuseToStart, serveCommand } from './serve.js'
import { webhooksCommand } from './webhooks.js'
import { packageVersion } from '../version.js'

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

program.addCommand(serveCommand())
program.addCommand(configCommand())
for (const c of backupCommands()) program.addCommand(c)

interface ClientOpts {
  url: string
  key?: string
  json?: boolean
}
const withClient = (cmd: Command) =>
  cmd
    .option('--url <url>', 'server URL (env STUDIOPOOL_URL)', process.env.STUDIOPOOL_URL ?? 'http://127.0.0.1:8080')
    // Never the key itself as the shown default (`--help` would print the secret, issue 17).
    .option('--key <key>', 'API key (default: the STUDIOPOOL_KEY environment variable)')
    .option('--json', 'machine-readable output')
const client = (o: ClientOpts) => new StudiopoolClient({ url: o.url, key: o.key ?? process.env.STUDIOPOOL_KEY })
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

program
  .command('migrate')
  .description("apply the store's pending migrations (before rolling out a release to replicas: docs/ha.md)")
  .option('-c, --config <file>', 'configuration file (default ./studiopool.yaml when present)')
  .option('--data-dir <dir>', 'data directory (default ./data)')
  .option('--dry-run', 'only list the pending migrations')
  .action(async (o: { config?: string; dataDir?: string; dryRun?: boolean }) => {
    const { ConfigError, loadConfig } = await configLoader()
    let config
    try {
      config = loadConfig({ file: o.config, overrides: { dataDir: o.dataDir } })
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`${err.message}\n`)
        process.exit(2)
      }
      throw err
    }
    const { runMigrate } = await import('../migrate-main.js')
    const r = await runMigrate(config, { dryRun: !!o.dryRun }).catch(refuseToStart)
    const list = (names: readonly string[]) => (names.length ? names.join(', ') : 'none')
    process.stdout.write(
      o.dryRun
        ? `studiopool migrate: pending: ${list(r.pending)} (the store is at ${r.before ?? 'no schema'})\n`
        : `studiopool migrate: applied ${list(r.pending)}; the store is at ${r.after ?? 'no schema'}\n`,
    )
  })

withClient(program.command('request'))
  .description('request a session for a user (REQUEST_SESSION)')
  .requiredOption('-u, --user <userId>', 'the user the session is for')
  .option('-t, --template <name>', 'template (default: the server default)')
  .option('-w, --wait', 'wait until the session is ready, showing progress')
  .option('--timeout <seconds>', 'give up waiting after this long', (v) => Number(v), 900)
  .action(async (o: ClientOpts & { user: string; template?: string; wait?: boolean; timeout: number }) => {
    const c = client(o)
    const grant = await c.request<{
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
    const tty = process.stderr.isTTY && !o.json
    let last = ''
    const show = (i: { state: string; progress: number; progressMessage: string; queuePosition: number | null }) => {
      const line = renderProgress(i, tty ? (process.stderr.columns ?? 80) : 80)
      if (tty) process.stderr.write(`\r\x1b[2K${line}`)
      else if (line !== last && !o.json) process.stderr.write(line + '\n')
      last = line
    }
    await followProgress(c, grant.instanceId, o.user, o.timeout, show).finally(() => {
      if (tty && last) process.stderr.write('\n')
    })
    out(o, grant, () => `ready: open ${grant.url}`)
  })

withClient(program.command('status'))
  .description('list assigned instances, or show one')
  .argument('[instanceId]')
  .option('-u, --user <userId>', 'owner (needed with requester keys)')
  .action(async (id: string | undefined, o: ClientOpts & { user?: string }) => {
    const c = client(o)
    if (id) {
      const r = await c.request<{ instance: InstanceOut }>(
        'GET',
        `/api/v1/instances/${encodeURIComponent(id)}${o.user ? `?userId=${encodeURIComponent(o.user)}` : ''}`,
      )
      return out(o, r, () =>
        Object.entries(r.instance)
          .map(([k, v]) => `${k.padEnd(16)} ${v ?? ''}`)
          .join('\n'),
      )
    }
    // Every page (the server pages at 1,000 by default): the list no longer stops at one page or 10,000.
    const instances: Record<string, unknown>[] = []
    for await (const i of c.eachInstance()) instances.push(i)
    const r = { instances, total: instances.length }
    out(o, r, () =>
      formatTable(r.instances, ['instanceId', 'template', 'state', 'userId', 'progress', 'lastActivityAt']),
    )
  })

withClient(program.command('delete'))
  .description('end a session and terminate its instance (as stop)')
  .argument('<instanceId>')
  .action(async (id: string, o: ClientOpts) => {
    const r = await client(o).request('DELETE', `/api/v1/instances/${encodeURIComponent(id)}`)
    out(o, r, () => `deleted ${id}`)
  })

// The verbs (README "Verbs"): stop ends a session, suspend keeps it, resume brings it back.
const VERBS = {
  stop: ['end the session and terminate the instance (admin; to keep it, suspend)', 'stopped'],
  suspend: ['stop the machine and keep its disk, owner and URL (admin; where the provider can)', 'suspended'],
  resume: ['bring a suspended instance back (admin)', 'resumed'],
  restart: ['a new generation under the same id, URL and owner (admin)', 'restarted'],
} as const
for (const [verb, [description, done]] of Object.entries(VERBS)) {
  withClient(program.command(verb))
    .description(description)
    .argument('<instanceId>')
    .action(async (id: string, o: ClientOpts) => {
      const r = await client(o).instanceAction(id, verb as keyof typeof VERBS)
      out(o, r, () => `${done} ${id} (${r.instance.state})`)
    })
}

withClient(program.command('history'))
  .description('who had which instance, when, why it ended and what it cost (newest first)')
  .option('-u, --user <userId>')
  .option('-t, --template <name>')
  .option('-n, --limit <n>', 'rows (0: all of them, page after page)', '50')
  .option('--csv', 'CSV output')
  .action(async (o: ClientOpts & { user?: string; template?: string; limit: string; csv?: boolean }) => {
    const want = Number(o.limit) || Infinity
    const q = { userId: o.user, template: o.template, limit: Math.min(want, 1000) }
    if (o.csv) {
      let rows = 0
      for await (const chunk of client(o).historyCsv(q)) {
        const lines = chunk.split('\r\n').filter(Boolean)
        const keep = lines.slice(0, rows === 0 ? want + 1 : want - rows)
        process.stdout.write(keep.map((l) => `${l}\r\n`).join(''))
        rows += keep.length - (rows === 0 ? 1 : 0)
        if (rows >= want) break
      }
      return
    }
    const history: Record<string, unknown>[] = []
    for await (const a of client(o).eachAssignment(q)) if (history.push(a) >= want) break
    out(o, { history }, () =>
      formatTable(history, [
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
  .addOption(new Option('-r, --role <role>').choices(['requester', 'proxy', 'admin', 'metrics']).default('requester'))
  .action(async (name: string, o: ClientOpts & { role: string }) => {
    const r = await client(o).request<{ id: string; key: string; role: string }>('POST', '/api/v1/keys', {
      name,
      role: o.role,
    })
    out(o, r, () => `created ${o.role} key "${name}" (id ${r.id}). Shown once:\n${r.key}`)
  })
withClient(keys.command('list')).action(async (o: ClientOpts) => {
  const all: Record<string, unknown>[] = []
  for await (const k of client(o).eachKey()) all.push(k)
  const r = { keys: all, total: all.length }
  out(o, r, () => formatTable(r.keys, ['id', 'name', 'role', 'source', 'createdAt', 'lastUsedAt', 'revokedAt']))
})
withClient(keys.command('revoke'))
  .argument('<id>')
  .action(async (id: string, o: ClientOpts) => {
    const r = await client(o).request('DELETE', `/api/v1/keys/${encodeURIComponent(id)}`)
    out(o, r, () => `revoked ${id}`)
  })

program.addCommand(homesCommand())
program.addCommand(webhooksCommand())

program.parseAsync(process.argv).catch(async (err: unknown) => {
  // A configuration the server can only judge at start (a provider's needs): exit 2, as for load errors.
  const { ConfigError } = await configLoader()
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`)
    process.exit(2)
  }
  if (err instanceof StudiopoolError) {
    process.stderr.write(`\nstudiopool: ${err.code}: ${err.message}\n`)
    process.exit(err.status === 0 ? 1 : err.status >= 500 ? 3 : 2)
  }
  process.stderr.write(`studiopool: ${(err as Error).message}\n`)
  process.exit(1)
})
