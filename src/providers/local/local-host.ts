import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { findExecutable } from './local-proc.js'

/** Running the host's helpers (`ip`, `nft`, `unshare`, `setpriv`) for the isolation of sessions. */

const run = promisify(execFile)
const CMD_TIMEOUT_MS = 10_000
/** Where `ip`, `nft`, `unshare` and `setpriv` usually are; searched after PATH. */
const SBIN_PATH = '/usr/sbin:/usr/bin:/sbin:/bin'

export function which(program: string): string | null {
  return findExecutable(program, `${process.env.PATH ?? ''}:${SBIN_PATH}`, '/')
}

/** Runs `bin args` (with `input` on its stdin when given); rejects on a non-zero exit or after 10 s. */
export async function sh(bin: string, args: readonly string[], input?: string): Promise<void> {
  if (input === undefined) {
    await run(bin, args, { timeout: CMD_TIMEOUT_MS })
    return
  }
  await new Promise<void>((resolve, reject) => {
    const child = execFile(bin, args, { timeout: CMD_TIMEOUT_MS }, (err) => (err ? reject(err) : resolve()))
    child.stdin?.end(input)
  })
}

/** The first line of a helper's complaint (its stderr, else the error's message), at most 200 characters. */
export function errLine(err: unknown): string {
  const e = err as { stderr?: string; message?: string }
  return (e.stderr || e.message || String(err)).trim().split('\n')[0]!.slice(0, 200)
}
