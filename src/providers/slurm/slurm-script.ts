import type { InstanceSpec } from '../provider.js'
import { identityEnv } from '../session-env.js'
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
 * 3. once the port answers, posts `{host, port}` to the instance's progress callback with its
 *    per-instance token (never on a command line), where the provider vouches for it
 *    (acceptAddress: the job's node, a port of the range); if the server cannot be reached after a
 *    few tries, appends `addr=host:port` to its own job comment (`scontrol update`), which the
 *    provider's batched squeue reads and checks the same way (`addressFromComment`);
 * 4. waits for the app and exits with its code.
 */
export function jobScript(spec: InstanceSpec, s: SlurmTemplateSettings, comment: string, workdir: string): string {
  const env: Record<string, string> = { ...identityEnv(spec), STUDIOPOOL_APP_TOKEN: spec.appToken }
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
case "$HOST" in *[!A-Za-z0-9.:-]*) echo "studiopool: hostCommand printed no host name" >&2; HOST="$(hostname)" ;; esac
export HOST
__sp_post() {
  # POSTs $1 (JSON) to the instance's callback with its token, which stays off every command line
  # (curl reads it from a config on stdin; python3 from its environment).
  if command -v curl >/dev/null 2>&1; then
    printf 'header = "Authorization: Bearer %s"\\n' "$STUDIOPOOL_PROGRESS_TOKEN" |
      curl -fsS -m 10 -o /dev/null -K - -H 'Content-Type: application/json' --data-binary "$1" "$STUDIOPOOL_PROGRESS_URL"
  elif command -v python3 >/dev/null 2>&1; then
    __SP_BODY="$1" python3 -c 'import os, urllib.request as u
r = u.Request(os.environ["STUDIOPOOL_PROGRESS_URL"], data=os.environ["__SP_BODY"].encode(), method="POST",
  headers={"Authorization": "Bearer " + os.environ["STUDIOPOOL_PROGRESS_TOKEN"], "Content-Type": "application/json"})
u.urlopen(r, timeout=10).read()'
  else
    return 1
  fi
}
__sp_progress() { __sp_post "{\\"progress\\":$1,\\"message\\":\\"$2\\"}" >/dev/null 2>&1 || true; }
# Reports where the app listens (the instance is routable only once the server accepted it);
# a few tries, then the job comment's addr= (the fallback, docs/slurm.md).
__sp_report() {
  local body="{\\"progress\\":60,\\"message\\":\\"the app listens on the compute node\\",\\"address\\":{\\"host\\":\\"$HOST\\",\\"port\\":$PORT}}"
  local i
  # Retried on any failure: a job may report before the server has recorded its create (409).
  for i in 1 2 3; do
    __sp_post "$body" 2>/dev/null && return 0
    [ "$i" -lt 3 ] && sleep "$i"
  done
  echo "studiopool: the server did not accept $HOST:$PORT through its callback; trying the job comment" >&2
  scontrol update JobId="$SLURM_JOB_ID" Comment="$__sp_comment addr=$HOST:$PORT" ||
    echo "studiopool: cannot report $HOST:$PORT through scontrol update" >&2
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
      __sp_report
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
