/**
 * WAL checkpoints on a thread of their own (the server's SQLite store).
 *
 * SQLite checkpoints automatically: the commit that takes the WAL past 1,000 pages copies them into
 * the database file and syncs both, synchronously, on the committing connection. For the server that
 * is its one thread: bench:api measured a checkpoint after every ninth batch of warm claims (a batch
 * of 25 writes about 110 pages), 7–14 ms each, with every request waiting — most of the warm hits'
 * p99. Here a worker thread with its own connection to the same file runs the same checkpoint
 * (PASSIVE: it never blocks the writer, nor is blocked by it) once the WAL holds CHECKPOINT_PAGES,
 * and again until nothing is left, so that the next write starts the WAL over from its beginning
 * (a WAL that only grows makes every page read slower). The fsyncs are the same ones, on the same
 * data, with the same `synchronous` setting: durability does not change, only the thread that waits.
 *
 * The main connection keeps an automatic checkpoint as a fallback at FALLBACK_PAGES (should the
 * worker fall behind), and the usual 1,000 pages again if the worker stops.
 */
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import type BetterSqlite3 from 'better-sqlite3'

/** WAL pages at which the worker checkpoints: SQLite's own automatic threshold. */
export const CHECKPOINT_PAGES = 1000
/** The main connection's automatic checkpoint while the worker runs: only if the worker falls far behind. */
export const FALLBACK_PAGES = 10_000
/** SQLite's default, restored if the worker stops. */
const DEFAULT_PAGES = 1000

/** The worker (CommonJS, evaluated): polls the WAL's size cheaply (NOOP) and checkpoints it when due. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.driver)
const db = new Database(workerData.path, { fileMustExist: true })
db.pragma('busy_timeout = 5000')
db.pragma('synchronous = NORMAL')
let timer, wait = workerData.minWaitMs, lastLog = -1
const status = (mode) => db.pragma('wal_checkpoint(' + mode + ')')[0]
function tick() {
  let r = status('NOOP')
  if (r.log >= workerData.pages) {
    // Again until every frame is in the database file (or a few rounds): commits during a round add frames.
    for (let i = 0; i < 10 && r.checkpointed < r.log; i++) r = status('PASSIVE')
    parentPort.postMessage({ type: 'checkpointed', log: r.log, checkpointed: r.checkpointed })
  }
  // Every few ms while the WAL grows, backing off to maxWaitMs while it does not.
  wait = r.log !== lastLog ? workerData.minWaitMs : Math.min(workerData.maxWaitMs, wait * 2)
  lastLog = r.log
  timer = setTimeout(tick, wait)
}
parentPort.on('message', (m) => {
  if (m !== 'close') return
  clearTimeout(timer)
  db.close()
  parentPort.close()
})
tick()
`

export interface Checkpointer {
  /** Stops the worker and closes its connection (before the main connection closes). */
  close(): Promise<void>
  /** Checkpoints the worker ran (each until the WAL was copied, or a few rounds). */
  readonly checkpoints: number
}

/** Starts checkpointing `path` (a file, in WAL mode, open on `main`) from a worker thread. */
export function startCheckpointer(
  path: string,
  main: BetterSqlite3.Database,
  opts: { onError?: (err: Error) => void } = {},
): Checkpointer {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3')
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    workerData: { driver, path, pages: CHECKPOINT_PAGES, minWaitMs: 5, maxWaitMs: 250 },
  })
  worker.unref()
  main.pragma(`wal_autocheckpoint = ${FALLBACK_PAGES}`)
  let checkpoints = 0
  let closing = false
  worker.on('message', (m: { type?: string }) => {
    if (m.type === 'checkpointed') checkpoints++
  })
  worker.on('error', (err) => opts.onError?.(err))
  const exited = new Promise<void>((resolve) =>
    worker.once('exit', () => {
      // Stopped by itself (an error): the main connection checkpoints as SQLite does by default.
      if (!closing && main.open) main.pragma(`wal_autocheckpoint = ${DEFAULT_PAGES}`)
      resolve()
    }),
  )
  return {
    get checkpoints() {
      return checkpoints
    },
    async close() {
      closing = true
      worker.postMessage('close')
      // A worker that does not finish its round within a second is stopped; its connection is then
      // closed by the driver's cleanup when the thread goes.
      const timer = setTimeout(() => void worker.terminate(), 1000)
      await exited
      clearTimeout(timer)
    },
  }
}
