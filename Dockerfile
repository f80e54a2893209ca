# The operator (and the local engine: same binary) as a static musl build on distroless/static, running as
# the image's non-root user. CI does not build this image (no container engine runs there).
#   docker build -t dps-operator:0.1.0 .
ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
# musl-gcc compiles the C parts (bundled SQLite, ring, jemalloc: the binary's allocator) for the static target.
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$TARGET"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --target "$TARGET" --bin dps-operator \
    && cp "target/$TARGET/release/dps-operator" /dps-operator

# distroless/static: CA certificates, /etc/passwd with nonroot (65532), no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /dps-operator /usr/local/bin/dps-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/dps-operator"]
CMD ["run"]
