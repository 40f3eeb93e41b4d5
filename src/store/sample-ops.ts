/** The state samples (the dashboard's history of instance counts per template and state), the same Kysely code on both dialects. */
import type { InstanceState } from '../domain/instance.js'
import type { StateSample } from './store.js'
import type { Db } from './rows.js'

/** Rows per INSERT (well under SQLite's 32,766 bound parameters). */
const INSERT_CHUNK = 500

export async function recordStateSamples(db: Db, samples: readonly StateSample[]): Promise<void> {
  for (let i = 0; i < samples.length; i += INSERT_CHUNK) {
    const chunk = samples.slice(i, i + INSERT_CHUNK)
    await db
      .insertInto('state_samples')
      .values(chunk.map((s) => ({ at: s.at, template: s.template, state: s.state, count: s.count })))
      .execute()
  }
}

export async function listStateSamples(db: Db, from: number, to: number): Promise<StateSample[]> {
  const rows = await db
    .selectFrom('state_samples')
    .selectAll()
    .where('at', '>=', from)
    .where('at', '<', to)
    .orderBy('at')
    .orderBy('template')
    .orderBy('state')
    .execute()
  return rows.map((r) => ({
    at: Number(r.at),
    template: r.template,
    state: r.state as InstanceState,
    count: Number(r.count),
  }))
}

export async function purgeStateSamples(db: Db, before: number): Promise<number> {
  const res = await db.deleteFrom('state_samples').where('at', '<', before).executeTakeFirst()
  return Number(res.numDeletedRows ?? 0)
}
