# studiopool's own image (README "Deployment"): multi-stage, compiled dist/, non-root, HEALTHCHECK.
#
#   docker build -t studiopool .
#   docker run -p 8080:8080 -v studiopool-data:/var/lib/studiopool studiopool
#
# BASE_IMAGE: any Debian-based image with Node 22.12+ or 24 and npm (the default is the official
# one). CI, which reaches no registry, builds from a local base it imports (test/ops/docker-image.test.ts).
ARG BASE_IMAGE=node:24-bookworm-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /app
COPY . .
# A build context that brings node_modules (CI has no registry) skips the install.
RUN if [ ! -d node_modules ]; then npm ci --no-audit --no-fund; fi \
  && npm run build \
  && npm prune --omit=dev --no-audit --no-fund \
  && rm -rf src test bench scripts

FROM ${BASE_IMAGE}
ENV NODE_ENV=production \
    STUDIOPOOL_HOST=0.0.0.0 \
    STUDIOPOOL_DATA_DIR=/var/lib/studiopool/data \
    HOME=/var/lib/studiopool
WORKDIR /app
# No src/ in the image: bin/studiopool.js runs the compiled dist/.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
COPY --from=build /app/examples ./examples
COPY --from=build --chown=1000:1000 /app/deploy/docker/data /var/lib/studiopool
# Not root: uid 1000 (the node image's `node` user).
USER 1000:1000
EXPOSE 8080
VOLUME ["/var/lib/studiopool"]
# The volume holds data/ (the store, the first admin key) and data-sessions/ (local sessions' homes).
# Node is PID 1 and handles SIGTERM itself (graceful: in-flight requests get server.shutdownGrace).
# With the local provider's session processes inside the container, run with `docker run --init`.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.STUDIOPOOL_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "/app/bin/studiopool.js"]
CMD ["serve"]
