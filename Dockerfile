# syntax=docker/dockerfile:1
#
# The teledrop image: one binary, every role (`teledrop ingress|worker|links|
# controller|migrate|standalone|...`).
#
#   docker build -t teledrop:dev .
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t teledrop:0.1.0 .
#
# Stages: `chef` has the toolchain and cargo-chef; `planner` reduces the
# workspace to a recipe (manifests and lock file only); `builder` compiles the
# dependencies from that recipe in their own layer, which Docker reuses until
# Cargo.toml/Cargo.lock change, then builds the `teledrop` binary. The runtime
# image is distroless (no shell, no package manager) and runs as uid 65532.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS chef
WORKDIR /src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo install cargo-chef --locked --version 0.1.77

FROM chef AS planner
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
COPY crates crates
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY rust-toolchain.toml ./
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is cached until the recipe changes.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo chef cook --release -p teledrop --recipe-path recipe.json
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo build --release --locked -p teledrop --bin teledrop \
 && install -D -m 0755 target/release/teledrop /out/usr/local/bin/teledrop \
 && install -d -m 0750 /out/var/lib/teledrop

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="teledrop" \
      org.opencontainers.image.description="Files sent to a Telegram bot become durable HTTPS download links." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder /out/usr/local/bin/teledrop /usr/local/bin/teledrop
# Working directory for `standalone`'s default ./data (mount a volume here).
COPY --from=builder --chown=65532:65532 /out/var/lib/teledrop /var/lib/teledrop
WORKDIR /var/lib/teledrop
USER 65532:65532
# 8080: TELEDROP_LISTEN (downloads, the webhook). 9090: TELEDROP_ADMIN_LISTEN
# (/healthz, /readyz, /metrics): publish it only where monitoring reaches it.
EXPOSE 8080 9090
ENTRYPOINT ["teledrop"]
CMD ["standalone"]
