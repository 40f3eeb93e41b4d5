/**
 * Fresh Postgres schemas for tests that run against a real Postgres (STUDIOPOOL_TEST_PG, default
 * postgres://127.0.0.1:5432/test). Each store gets its own schema (search_path via the URL's `options`),
 * dropped by `dropSchemas()` in `after()`. STUDIOPOOL_SKIP_PG=1 skips; an unreachable server fails
 * with a clear message rather than silently skipping.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { pgClientConfig } from '../../src/store/dialects.js'

export const PG_BASE_URL = process.env.STUDIOPOOL_TEST_PG ?? 'postgres://127.0.0.1:5432/test'
export const PG_SKIP = process.env.STUDIOPOOL_SKIP_PG === '1'

const runId = `sp_t_${process.pid}_${randomBytes(3).toString('hex')}`
const created: string[] = []
let admin: pg.Client | undefined

const redact = (url: string) => url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@')

async function client(): Promise<pg.Client> {
  if (admin) return admin
  const c = new pg.Client({
    connectionString: pgClientConfig(PG_BASE_URL).connectionString,
    connectionTimeoutMillis: 5000,
  })
  try {
    await c.connect()
  } catch (err) {
    await c.end().catch(() => {})
    throw new Error(
      `Postgres is not reachable at ${redact(PG_BASE_URL)}: ${(err as Error).message}. Start Postgres, point STUDIOPOOL_TEST_PG at one, or set STUDIOPOOL_SKIP_PG=1.`,
      { cause: err },
    )
  }
  admin = c
  return c
}

/** Creates a new empty schema and returns a store URL whose search_path points at it. */
export async function freshPgUrl(): Promise<string> {
  const c = await client()
  const name = `${runId}_${created.length + 1}`
  await c.query(`create schema "${name}"`)
  created.push(name)
  const u = new URL(PG_BASE_URL)
  u.searchParams.set('options', `-c search_path=${name}`)
  return u.toString()
}

/** Drops every schema made by freshPgUrl() in this process and closes the admin connection. */
export async function dropSchemas(): Promise<void> {
  if (!admin) return
  for (const s of created.splice(0)) await admin.query(`drop schema if exists "${s}" cascade`).catch(() => {})
  await admin.end().catch(() => {})
  admin = undefined
}
