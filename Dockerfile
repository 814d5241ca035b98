# The adsim image for cluster runs (deploy/k8s-indexed-job.yaml). Build from the repository
# root: docker build -t adsim:latest .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY data data
COPY benches benches
# The release profile strips the binary (Cargo.toml): about 75 MB.
RUN cargo build --release --locked --bin adsim

FROM debian:bookworm-slim
COPY --from=build /src/target/release/adsim /usr/local/bin/adsim
WORKDIR /results
ENTRYPOINT []
CMD ["adsim", "--help"]
