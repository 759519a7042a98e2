# celery-operator image: a static binary on an empty base, running as a non-root user.
#   docker build -t celery-operator:dev .
# Build stage: musl for a fully static binary (rustls, no OpenSSL).
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY operator operator
COPY e2e/Cargo.toml e2e/Cargo.toml
COPY e2e/src e2e/src
RUN cargo build --release --locked -p celery-operator --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/celery-operator /celery-operator

FROM scratch
COPY --from=build /celery-operator /celery-operator
# The chart runs it with a read-only root filesystem; it writes nothing to disk.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/celery-operator"]
CMD ["run", "--leader-election", "--log-json"]
