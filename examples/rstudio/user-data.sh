#!/bin/bash
# studiopool user data for an RStudio instance on EC2 (Ubuntu AMI; see docs/aws.md).
#
# studiopool renders this file for each instance, replacing every token in triple braces before launch, and
# rejects at start a template that names a token it does not know. Built-in tokens: instanceId,
# poolId, template, progressUrl, progressToken, port, region, basePath; configured ones come from
# the template's settings.tokens (here: registry, image).
#
# This is the seed's script made robust: it stops at the first failing step, retries the network
# steps, does not open the Docker socket to every user (the seed's chmod 666), restarts the
# container on reboot (stop/start = suspend/resume), and reports its progress to studiopool at
# each step. Progress reports are best effort: a failed report never stops the launch.
#
# DISABLE_AUTH=true: RStudio asks for no password. That is only safe because
#   1. the studiopool gateway authenticates every request and lets only the session's owner through, and
#   2. the instance's security group lets only the gateway's security group reach port {{{port}}}
#      (no 0.0.0.0/0 rule; the seed's "8787, Anywhere" must not be copied).
set -euo pipefail

PROGRESS_URL='{{{progressUrl}}}'
PROGRESS_TOKEN='{{{progressToken}}}'
REGION='{{{region}}}'
REGISTRY='{{{registry}}}'
IMAGE='{{{image}}}'
PORT='{{{port}}}'
STEP_PROGRESS=5

progress() {
  STEP_PROGRESS="$1"
  curl -fsS -m 10 -X POST \
    -H "Authorization: Bearer ${PROGRESS_TOKEN}" \
    -H 'content-type: application/json' \
    -d "{\"progress\":$1,\"message\":\"$2\"}" \
    "${PROGRESS_URL}" >/dev/null || true
}
trap 'progress "${STEP_PROGRESS}" "launch script failed at line ${LINENO}"' ERR

# retry N CMD...: runs CMD up to N times, 5 seconds apart.
retry() {
  local n="$1"; shift
  local i
  for ((i = 1; i <= n; i++)); do
    if "$@"; then return 0; fi
    sleep 5
  done
  return 1
}

progress 5 "instance booted"

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o DPkg::Lock::Timeout=300)
retry 5 apt-get "${APT_OPTS[@]}" update
retry 5 apt-get "${APT_OPTS[@]}" install docker.io awscli curl ca-certificates
systemctl enable --now docker
progress 30 "docker installed"

if [ -n "${REGISTRY}" ]; then
  # The instance profile grants ECR read (docs/aws.md); no key is stored on the instance.
  retry 5 bash -c "aws ecr get-login-password --region '${REGION}' | docker login --username AWS --password-stdin '${REGISTRY}'"
  IMAGE_REF="${REGISTRY}/${IMAGE}"
else
  IMAGE_REF="${IMAGE}"
fi
retry 5 docker pull "${IMAGE_REF}"
progress 60 "image pulled"

docker rm -f rstudio >/dev/null 2>&1 || true
docker run -d --name rstudio --restart unless-stopped \
  -p "${PORT}:8787" \
  -e DISABLE_AUTH=true \
  "${IMAGE_REF}"

# Wait (bounded: 5 minutes) until RStudio answers locally, then report; the gateway's own health
# check marks the instance ready.
for ((i = 0; i < 150; i++)); do
  if curl -fsS -m 5 -o /dev/null "http://127.0.0.1:${PORT}/"; then break; fi
  sleep 2
done
progress 90 "app started"
