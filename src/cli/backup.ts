import { Command } from 'commander'

/**
 * `studiopool backup <file>` (while the server runs) and `studiopool restore <file>` (server stopped)
 * for the SQLite store; for Postgres they say to use pg_dump / pg_restore (exit 2).
 */
export function backupCommands(): Command[] {
  const backup = new Command('backup')
    .description("a consistent copy of the SQLite store while the server runs (SQLite's online backup API)")
    .argument('<file>', 'the backup file to write (must not exist)')
    .option('-c, --config <file>', 'configuration file (default ./studiopool.yaml when present)')
    .option('--data-dir <dir>', 'data directory (default ./data)')
    .action(async (file: string, o: { config?: string; dataDir?: string }) => {
      const path = await sqlitePath(o, 'backup')
      const { backupSqlite } = await import('../store/sqlite/backup.js')
      const r = await backupSqlite(path, file)
      process.stdout.write(`studiopool backup: ${path} → ${r.file} (${r.bytes} bytes, ${r.pages} pages, ${r.ms} ms)\n`)
    })
  const restore = new Command('restore')
    .description('put a backup in place of the SQLite store (stop the server first); the old file is kept beside it')
    .argument('<file>', 'a file written by studiopool backup')
    .option('-c, --config <file>', 'configuration file (default ./studiopool.yaml when present)')
    .option('--data-dir <dir>', 'data directory (default ./data)')
    .action(async (file: string, o: { config?: string; dataDir?: string }) => {
      const path = await sqlitePath(o, 'restore')
      const { restoreSqlite } = await import('../store/sqlite/backup.js')
      const r = await restoreSqlite(file, path)
      process.stdout.write(
        `studiopool restore: ${file} → ${r.file}${r.keptAs ? ` (the previous database is kept as ${r.keptAs})` : ''}\n`,
      )
    })
  return [backup, restore]
}

async function sqlitePath(o: { config?: string; dataDir?: string }, what: string): Promise<string> {
  const { loadConfig } = await import('../config/load.js')
  const config = loadConfig({ file: o.config, overrides: { dataDir: o.dataDir } })
  if (config.store.driver !== 'sqlite') {
    process.stderr.write(
      `studiopool ${what}: the store is Postgres: use ${what === 'backup' ? 'pg_dump --format=custom --file=studiopool.dump "$DATABASE_URL"' : 'pg_restore --clean --if-exists --dbname="$DATABASE_URL" studiopool.dump'} (README "Operations")\n`,
    )
    process.exit(2)
  }
  return config.store.path
}
