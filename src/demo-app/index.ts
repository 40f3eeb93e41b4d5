import { fileURLToPath } from 'node:url'

/**
 * Absolute path of the demo session app (plain JavaScript, runs without tsx).
 * The default local template runs `['node', DEMO_APP_SCRIPT]`; the local provider replaces
 * `node` with `process.execPath`.
 */
export const DEMO_APP_SCRIPT: string = fileURLToPath(new URL('./server.mjs', import.meta.url))

/** The command of the default local template. */
export function demoAppCommand(extraArgs: readonly string[] = []): string[] {
  return ['node', DEMO_APP_SCRIPT, ...extraArgs]
}
