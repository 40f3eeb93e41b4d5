#!/usr/bin/env node
// The studiopool binary. The published package runs the compiled JavaScript in dist/ (`npm run build`);
// a checkout of the repository (it has src/, which the package does not ship) runs the TypeScript
// sources through tsx, a development dependency, so a change is never hidden behind a stale build.
// STUDIOPOOL_USE_DIST=1 runs dist/ in a checkout too (to try the build as it ships).
import { existsSync } from 'node:fs'

const sources = new URL('../src/cli/main.ts', import.meta.url)
if (existsSync(sources) && process.env.STUDIOPOOL_USE_DIST !== '1') {
  const { register } = await import('tsx/esm/api')
  register()
  await import(sources.href)
} else {
  const compiled = new URL('../dist/cli/main.js', import.meta.url)
  if (!existsSync(compiled)) {
    process.stderr.write('studiopool: dist/ is missing; run `npm run build` first\n')
    process.exit(1)
  }
  await import(compiled.href)
}
