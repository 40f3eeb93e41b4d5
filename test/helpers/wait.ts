import { createServer } from 'node:net'

/**
 * Polls `fn` until it returns a truthy value, or fails after `ms` naming `what` (and the last error
 * `fn` threw, which is otherwise treated as "not yet"). Polls quickly at first, then every 50 ms.
 */
export async function waitFor<T>(
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  ms: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + ms
  let last: unknown
  for (let i = 0; ; i++) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`)
    await new Promise((r) => setTimeout(r, Math.min(10 * 2 ** Math.min(i, 3), 50)))
  }
}

/** A loopback port free right now (for a child process that must be told its port up front). */
export async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const port = (srv.address() as { port: number }).port
  await new Promise<void>((r) => srv.close(() => r()))
  return port
}
