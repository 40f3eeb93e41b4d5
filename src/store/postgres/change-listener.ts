/**
 * LISTEN for route changes (0008-ha's trigger) on a dedicated connection, for Store.watchInstances.
 * On every (re)connect the subscriber is told to resync in full: notifications sent while no one
 * listened are lost, the table is not. Reconnects back off from 100 ms to 2 s.
 */
import pg from 'pg'
import type { Logger } from 'pino'
import type { InstanceChange, InstanceWatch, InstanceWatcher } from '../store.js'
import { toInstance } from '../rows.js'
import type { InstancesTable } from '../tables.js'

export function listenForChanges(
  cfg: pg.ClientConfig,
  channel: string,
  log: Logger,
  watcher: InstanceWatcher,
): InstanceWatch {
  let client: pg.Client | undefined
  let closed = false
  let connected = false
  let schema: string | undefined
  let backoff = 100
  let timer: NodeJS.Timeout | undefined

  const reconnect = () => {
    connected = false
    if (closed || timer) return
    timer = setTimeout(() => {
      timer = undefined
      void connect()
    }, backoff)
    timer.unref()
    backoff = Math.min(2000, backoff * 2)
  }

  const connect = async () => {
    const c = new pg.Client({ ...cfg, keepAlive: true, application_name: 'studiopool-routes' })
    client = c
    c.on('error', (err) => {
      log.warn({ err: { message: err.message } }, 'route change listener lost its connection; reconnecting')
      c.end().catch(() => {})
      if (client === c) reconnect()
    })
    c.on('end', () => {
      if (client === c) reconnect()
    })
    c.on('notification', (n) => {
      const change = parseChange(n.payload ?? '', schema)
      if (change) watcher.changed(change)
    })
    try {
      await c.connect()
      schema = (await c.query<{ s: string }>('select current_schema() as s')).rows[0]?.s
      await c.query(`listen ${channel}`)
      if (closed) return void (await c.end().catch(() => {}))
      connected = true
      backoff = 100
      watcher.resync()
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'route change listener could not connect; retrying')
      c.end().catch(() => {})
      if (client === c) reconnect()
    }
  }
  void connect()

  return {
    connected: () => connected,
    async close() {
      closed = true
      if (timer) clearTimeout(timer)
      const c = client
      client = undefined
      connected = false
      await c?.end().catch(() => {})
    },
  }
}

/** `<schema> <id> <ms>[ <row JSON>]` of our schema; undefined for another schema's or a malformed one. */
function parseChange(payload: string, schema: string | undefined): InstanceChange | undefined {
  const [s, id, at] = payload.split(' ', 3)
  if (!id || s !== schema) return undefined
  const rest = payload.indexOf(' ', s.length + id.length + 2)
  let row: InstanceChange['row']
  if (rest > 0) {
    try {
      const r = JSON.parse(payload.slice(rest + 1)) as InstancesTable
      row = toInstance({ ...r, progress_token_hash: null })
    } catch {
      row = undefined // read it from the table instead
    }
  }
  return { id, changedAt: Number(at), ...(row ? { row } : {}) }
}
