# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in their own cached layer,
# the runtime image holds only the binary and runs as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
COPY crates crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p teledrop && cp target/release/teledrop /teledrop

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /teledrop /usr/local/bin/teledrop
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/teledrop"]
CMD ["standalone"]
