# syntax=docker/dockerfile:1
#
# One image with every binary; each Cloud Run service and job picks its own command
# (infra/terraform): ingest, worker, events-svc, members-fn, and the jobs migrate,
# members-import and soak (loadtest soak), the queue-mode emergency CLI and the ops CLI of the
# meeting-day runbook (ops status, ops canary). No key or secret
# is in it: everything secret comes from Secret Manager as environment variables at run time.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/ekklesia/ekklesia:TAG .
#
# No container engine runs on the development machines: hadolint and checkov check this file
# (infra/local/infra-check.sh).

ARG RUST_VERSION=1.91

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src

# 1. Dependencies only, from the manifests and the lock file with empty stand-ins for the
#    project's sources: this layer is rebuilt only when a Cargo.toml or Cargo.lock changes.
#    The stand-ins cover every member and every target a manifest names ([[bench]]): keep
#    them in step with the workspace.
COPY Cargo.toml Cargo.lock ./
COPY shared/Cargo.toml shared/
COPY testkit/Cargo.toml testkit/
COPY ingest/Cargo.toml ingest/
COPY worker/Cargo.toml worker/
COPY events-svc/Cargo.toml events-svc/
COPY members-fn/Cargo.toml members-fn/
COPY loadtest/Cargo.toml loadtest/
COPY infra/check/Cargo.toml infra/check/
RUN set -eu; \
    for crate in shared testkit ingest worker events-svc members-fn loadtest infra/check; do \
      mkdir -p "$crate/src/bin"; \
      : > "$crate/src/lib.rs"; \
    done; \
    for bin in ingest/src/main.rs worker/src/main.rs events-svc/src/main.rs \
               members-fn/src/main.rs loadtest/src/main.rs shared/src/bin/migrate.rs \
               ingest/src/bin/queue-mode.rs members-fn/src/bin/members-import.rs \
               shared/benches/micro.rs worker/benches/batch_commit.rs; do \
      mkdir -p "$(dirname "$bin")"; \
      echo 'fn main() {}' > "$bin"; \
    done; \
    cargo build --release --locked -p shared -p ingest -p worker -p events-svc -p members-fn -p loadtest --bins

# 2. The project's code. COPY keeps the files' own times, which can be older than the
#    stand-ins just built: touch them so cargo rebuilds the project's crates.
#    The query macros read the committed offline data (.sqlx/, copied with the sources): no
#    database at build time.
COPY . .
ENV SQLX_OFFLINE=true
RUN set -eu; \
    find shared testkit ingest worker events-svc members-fn loadtest -name '*.rs' -exec touch {} +; \
    cargo build --release --locked -p shared -p ingest -p worker -p events-svc -p members-fn -p loadtest --bins; \
    mkdir -p /out; \
    for bin in ingest queue-mode worker events-svc members-fn members-import migrate loadtest ops; do \
      cp "target/release/$bin" /out/; \
    done

# Runtime: glibc and libgcc only (the binaries link nothing else: rustls, no OpenSSL), no
# shell, no package manager; runs as the image's unprivileged user.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
#checkov:skip=CKV_DOCKER_2:Cloud Run ignores HEALTHCHECK; its startup and liveness probes call /readyz and /healthz (infra/terraform/run.tf), and distroless has no shell or curl to run one.
COPY --from=build /out/ /usr/local/bin/
# 65532 is distroless's nonroot user; numeric so a runtime can tell it is not root.
USER 65532:65532
# Cloud Run sets PORT; the services listen on 0.0.0.0:$PORT.
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ingest"]
