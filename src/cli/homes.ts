import { Command } from 'commander'
import { StudiopoolClient } from '../client/index.js'

interface HomeOut {
  provider: string
  ref: string
  owner: string
  createdAt: string | null
  where: string
}

interface Opts {
  url: string
  key?: string
  json?: boolean
}

const withClient = (cmd: Command) =>
  cmd
    .option('--url <url>', 'server URL (env STUDIOPOOL_URL)', process.env.STUDIOPOOL_URL ?? 'http://127.0.0.1:8080')
    .option('--key <key>', 'an admin API key (default: the STUDIOPOOL_KEY environment variable)')
    .option('--json', 'machine-readable output')

/**
 * `studiopool homes [--user U]` lists users' persistent homes (docker: the home volumes on every
 * host); `studiopool homes delete <provider> <ref>` deletes one (refused while a session uses it).
 * Thin: the admin API's `/api/v1/homes` does the work.
 */
export function homesCommand(): Command {
  const homes = new Command('homes').description("users' persistent homes (volumes): list, delete (admin)")
  withClient(homes.command('list', { isDefault: true }))
    .description("list users' homes")
    .option('-u, --user <userId>', 'only this user')
    .action(async (o: Opts & { user?: string }) => {
      const q = o.user ? `?userId=${encodeURIComponent(o.user)}` : ''
      const r = await new StudiopoolClient({ url: o.url, key: o.key ?? process.env.STUDIOPOOL_KEY }).request<{
        homes: HomeOut[]
        unreachable: string[]
      }>('GET', `/api/v1/homes${q}`)
      if (o.json) return void process.stdout.write(`${JSON.stringify(r, null, 2)}\n`)
      const lines = r.homes.map((h) => `${h.owner}\t${h.provider}\t${h.ref}\t${h.createdAt ?? '-'}`)
      process.stdout.write(`${['owner\tprovider\tref\tcreatedAt', ...lines].join('\n')}\n`)
      if (!r.homes.length) process.stdout.write('(none)\n')
      for (const u of r.unreachable) process.stdout.write(`not answering, not listed: ${u}\n`)
    })
  withClient(homes.command('delete <provider> <ref>'))
    .description("delete one home (a user's files: there is no undo; back it up first, see docs/docker.md)")
    .action(async (provider: string, ref: string, o: Opts) => {
      const q = `?provider=${encodeURIComponent(provider)}&ref=${encodeURIComponent(ref)}`
      const r = await new StudiopoolClient({ url: o.url, key: o.key ?? process.env.STUDIOPOOL_KEY }).request(
        'DELETE',
        `/api/v1/homes${q}`,
      )
      process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : `deleted ${provider} ${ref}\n`)
    })
  return homes
}
