import pino from 'pino'
import type { Config } from './config/types.js'
import type { ErrorDetail } from './domain/errors.js'
import type { Provider } from './providers/provider.js'
import { loadProvider } from './providers/registry.js'

/**
 * What `studiopool config check` adds to the loader's checks without starting anything (no store, no
 * provider init, no cloud call): each template's provider exists and accepts its settings and the
 * provider-wide ones, and its program is there. `serve` finds the same problems at start (exit 2
 * unless `--degraded`); what needs a running backend (an image on a Docker host) only `serve` sees.
 */
export async function staticTemplateProblems(config: Config): Promise<ErrorDetail[]> {
  const problems: ErrorDetail[] = []
  const providers = new Map<string, Provider | string>()
  for (const t of config.templates) {
    let p = providers.get(t.provider)
    if (p === undefined) {
      try {
        p = await loadProvider(t.provider, {
          poolId: config.pool.id,
          dataDir: config.server.dataDir,
          settings: config.providers[t.provider] ?? {},
          log: pino({ level: 'silent' }),
        })
      } catch (err) {
        p = describe(err)
      }
      providers.set(t.provider, p)
    }
    if (typeof p === 'string') {
      problems.push({ path: `/templates/${t.name}`, message: `provider ${t.provider}: ${p}` })
      continue
    }
    let found: string[]
    try {
      found = p.validateTemplate(t)
    } catch (err) {
      found = [describe(err)]
    }
    for (const message of found) problems.push({ path: `/templates/${t.name}`, message })
  }
  return problems
}

function describe(err: unknown): string {
  const details = (err as { details?: readonly ErrorDetail[] }).details
  const m = (err as Error).message
  return details?.length ? `${m}: ${details.map((d) => d.message).join('; ')}` : m
}
