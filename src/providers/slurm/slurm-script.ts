import type { InstanceSpec } from '../provider.js'
import { shq } from './slurm-cli.js'
import type { SlurmTemplateSettings } from './slurm-config.js'

/** Tokens known only on the compute node, once the job runs: shell variables there. */
const RUNTIME_TOKENS: Readonly<Record<string, string>> = {
  port: '${PORT}',
  host: '${HOST}',
  appToken: '${STUDIOPOOL_APP_TOKEN}',
}

/** Replaces `{{token}}`s: submit-time values shell-quoted, runtime ones as `${VAR}` (also inside double quotes). */
export function substituteScript(script: string, spec: InstanceSpec, workdir: string): string {
  const fixed: Record<string, string> = {
    basePath: spec.basePath,
    instanceId: spec.id,
    workdir,
    user: spec.ownerId ?? '',
    sessionUrl: spec.sessionUrl,
  }
  return script.replace(/\{\{(\w+)\}\}/g, (m, name: string) => {
    if (RUNTIME_TOKENS[name]) return RUNTIME_TOKENS[name]
    // Values of ours: ids, paths and URLs without quotes or `$`; still, never let one break out.
    const v = fixed[name]
    return v === undefined ? m : /^[A-Za-z0-9_./:@%+=,-]*$/.test(v) ? v : shq(v)
  })
}

/** `{{token}}`s of a path setting (workdir, output), substituted at submit time. */
export function substitutePath(value: string, spec: InstanceSpec, user: string): string {
  const t: Record<string, string> = { instanceId: spec.id, user }
  return value.replace(/\{\{(\w+)\}\}/g, (m, name: string) => t[name] ?? m)
}

/**
 * The job script studiopool submits (on stdin; never on a command line). It
 * 1. exports what the app needs (PORT, HOST, BASE_PATH, STUDIOPOOL_*), the app token included;
 * 2. picks a port in the template's range that nothing answers on, and runs the app on it — the app
 *    binds it itself, so there is no bind-then-close race; an app that exits before listening is
 *    tried on the next port (at most three times), then the job fails with the app's exit code;
 * 3. once the port answers, reports `host:port` by appending `addr=` to its own job comment
 *    (`scontrol update`, which a job's owner may do), where the provider's one batched squeue reads
 *    it; and posts progress to the instance's callback (best effort, with its per-instance token);
 * 4. waits for the app and exits with its code.
 */
export function jobScript(spec: InstanceSpec, s: SlurmTemplateSettings, comment: string, workdir: string): string {
  const env: Record<string, string> = {
    BASE_PATH: spec.basePath,
    STUDIOPOOL_POOL: spec.poolId,
    STUDIOPOOL_INSTANCE_ID: spec.id,
    STUDIOPOOL_TEMPLATE: spec.template.name,
    STUDIOPOOL_SESSION_URL: spec.sessionUrl,
    STUDIOPOOL_PROGRESS_URL: spec.progressUrl,
    STUDIOPOOL_PROGRESS_TOKEN: spec.progressToken,
    STUDIOPOOL_APP_TOKEN: spec.appToken,
    ...(spec.ownerId ? { STUDIOPOOL_USER: spec.ownerId } : {}),
  }
  const exports = Object.entries(env)
    .map(([k, v]) => `export ${k}=${shq(v)}`)
    .join('\n')
  return `#!/bin/bash
# studiopool job wrapper for instance ${spec.id} (docs/slurm.md, "The job script contract")
export PATH="\${PATH:-/usr/local/bin:/usr/bin:/bin}"
${exports}
__sp_comment=${shq(comment)}
__sp_first=${s.portFirst}
__sp_last=${s.portLast}
HOST="$( ${s.hostCommand} )" 2>/dev/null || HOST=""
HOST="\${HOST%% *}"
[ -n "$HOST" ] || HOST="$(hostname)"
export HOST
__sp_progress() {
  command -v curl >/dev/null 2>&1 || return 0
  curl -fsS -m 5 -o /dev/null -H "Authorization: Bearer $STUDIOPOOL_PROGRESS_TOKEN" -H 'Content-Type: application/json' \\
    -d "{\\"progress\\":$1,\\"message\\":\\"$2\\"}" "$STUDIOPOOL_PROGRESS_URL" 2>/dev/null || true
}
__sp_answers() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
__sp_app() {
${substituteScript(s.script, spec, workdir)}
}
__sp_progress 40 "job $SLURM_JOB_ID started on $HOST; starting the app"
__sp_span=$((__sp_last - __sp_first + 1))
__sp_port=$((__sp_first + (RANDOM * 32768 + RANDOM) % __sp_span))
__sp_tries=0
__sp_rc=1
for __sp_probe in $(seq 1 200); do
  PORT=$__sp_port
  __sp_port=$((__sp_first + (__sp_port - __sp_first + 1) % __sp_span))
  if __sp_answers "$PORT"; then continue; fi
  export PORT
  __sp_app &
  __sp_pid=$!
  while kill -0 "$__sp_pid" 2>/dev/null; do
    if __sp_answers "$PORT"; then
      if ! scontrol update JobId="$SLURM_JOB_ID" Comment="$__sp_comment addr=$HOST:$PORT"; then
        echo "studiopool: cannot report $HOST:$PORT through scontrol update" >&2
      fi
      __sp_progress 60 "the app listens on the compute node"
      wait "$__sp_pid"
      exit $?
    fi
    sleep 0.2
  done
  wait "$__sp_pid"
  __sp_rc=$?
  __sp_tries=$((__sp_tries + 1))
  echo "studiopool: the app exited with code $__sp_rc before listening on $HOST:$PORT" >&2
  [ "$__sp_tries" -ge 3 ] && break
done
exit "$__sp_rc"
`
}
