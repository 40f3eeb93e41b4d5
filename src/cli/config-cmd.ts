import { Command } from 'commander'

/**
 * `studiopool config check [file]` (exit 0 valid, 2 with every problem listed) and
 * `studiopool config print` (the effective configuration with each value's source, secrets redacted).
 * Neither starts anything: no store is opened, no provider initialised.
 */
export function configCommand(): Command {
  const config = new Command('config').description('check or print the configuration without starting')
  config
    .command('check')
    .description('validate a configuration file (and the environment) as serve would; exit 2 listing every problem')
    .argument('[file]', 'configuration file (default ./studiopool.yaml when present)')
    .option('-c, --config <file>', 'the same as the argument')
    .action(async (file: string | undefined, o: { config?: string }) => {
      const loaded = await load(file ?? o.config)
      const { staticTemplateProblems } = await import('../config-check.js')
      const { ConfigError } = await import('../config/load.js')
      const problems = await staticTemplateProblems(loaded.config)
      if (problems.length) fail(new ConfigError(problems, loaded.source).message)
      for (const w of loaded.warnings) process.stderr.write(`warning: ${w}\n`)
      const names = loaded.config.templates.map((t) => `${t.name} (${t.provider})`).join(', ')
      process.stdout.write(`configuration OK (${loaded.source}): templates ${names}\n`)
    })
  config
    .command('print')
    .description("print the effective configuration, each value's source (default, file, env NAME), secrets redacted")
    .option('-c, --config <file>', 'configuration file (default ./studiopool.yaml when present)')
    .action(async (o: { config?: string }) => {
      const loaded = await load(o.config)
      const { renderEffective } = await import('../config/print.js')
      for (const w of loaded.warnings) process.stderr.write(`warning: ${w}\n`)
      process.stdout.write(renderEffective(loaded))
    })
  return config
}

async function load(file: string | undefined) {
  const { ConfigError, loadConfigDetailed } = await import('../config/load.js')
  try {
    return loadConfigDetailed({ file })
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message)
    throw err
  }
}

function fail(message: string): never {
  process.stderr.write(`${message}\n`)
  process.exit(2)
}
