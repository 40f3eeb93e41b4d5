import { accessSync, constants, readdirSync } from 'node:fs'
import { delimiter, dirname, basename, isAbsolute, join, resolve } from 'node:path'
import type { ErrorDetail } from '../domain/errors.js'
import { suggestion } from './explain.js'
import type { Config } from './types.js'
import type { FinishContext } from './finish.js'

/**
 * The `hooks:` rules the schema cannot say (docs/hooks.md): unique names, templates that exist,
 * and a program that is there and executable — a path (`./x`, `/x`) against the working directory,
 * a bare name on PATH — so that a typo fails `serve` (exit 2) and `config check`, not every event.
 */
export function hookProblems(cfg: Config, ctx: FinishContext): ErrorDetail[] {
  const problems: ErrorDetail[] = []
  const names = new Set<string>()
  const templates = cfg.templates.map((t) => t.name)
  cfg.hooks.forEach((h, i) => {
    if (names.has(h.name)) problems.push({ path: `/hooks/${i}/name`, message: `duplicate hook name "${h.name}"` })
    names.add(h.name)
    h.templates.forEach((t, j) => {
      if (!templates.includes(t))
        problems.push({
          path: `/hooks/${i}/templates/${j}`,
          message: `no template named "${t}"${suggestion(t, templates)}`,
        })
    })
    const missing = programProblem(h.command[0]!, ctx)
    if (missing) problems.push({ path: `/hooks/${i}/command/0`, message: missing })
  })
  return problems
}

const executable = (p: string): boolean => {
  try {
    accessSync(p, constants.X_OK)
    return true
  } catch {
    return false
  }
}

function programProblem(program: string, ctx: FinishContext): string | null {
  if (program.includes('/')) {
    const p = isAbsolute(program) ? program : resolve(ctx.cwd, program)
    if (executable(p)) return null
    let siblings: string[] = []
    try {
      siblings = readdirSync(dirname(p))
    } catch {
      // the directory is missing too: no suggestion
    }
    return `program ${program} not found or not executable${suggestion(basename(p), siblings)}`
  }
  const dirs = (ctx.env.PATH ?? '').split(delimiter).filter(Boolean)
  if (dirs.some((d) => executable(join(d, program)))) return null
  return `program "${program}" is not on PATH (${dirs.join(delimiter) || 'empty'}); give a path or install it`
}
