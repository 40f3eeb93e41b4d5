import { createServer } from 'node:net'

/** What `waitFor` resolves to: the first value of `fn` that is not undefined, null, false, 0 or ''. */
export type Truthy<T> = Exclude<Awaited<T>, undefined | null | false | 0 | ''>

/**
 * The one polling helper of the tests: calls `fn` until it returns a truthy value and resolves to
 * that value, or fails after `timeoutMs` naming `what` and the last error `fn` threw (an error
 * counts as "not yet": a server still starting refuses connections). Polls quickly at first
 * (10, 20, 40 ms), then every `intervalMs` (default 50 ms). Waits on a condition, never a sleep.
 */
export async function waitFor<T>(
  what: string,
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  intervalMs = 50,
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (let i = 0; ; i++) {
    try {
      const v = await fn()
      if (v) return v as Truthy<T>
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`,
      )
    await new Promise((r) => setTimeout(r, Math.min(10 * 2 ** i, intervalMs)))
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
