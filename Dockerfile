# One image for every voucher-relay subcommand: `run` by default, and `sandbox`, `migrate`,
# `dlq`, `callbacks`... as the command. docker-compose.yml runs it twice: the relay and the
# provider sandboxes.
#
#   docker build -t voucher-relay .
#   docker run --rm voucher-relay --help

# ---------------------------------------------------------------- build
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole context (.dockerignore keeps target/ and .git out): the crate may embed files
# from outside src/ (the migrations, and whatever include_str! names).
COPY . .
# --locked: exactly the versions in Cargo.lock, the ones CI tested.
RUN cargo build --release --locked --bin voucher-relay

# ---------------------------------------------------------------- runtime
# Same Debian release as the build stage, so the binary finds the glibc it was linked against.
FROM debian:bookworm-slim
# ca-certificates: provider APIs and callback receivers are reached over HTTPS, and rustls
# verifies them against the system's roots. Nothing else: the health checks in
# docker-compose.yml use bash's /dev/tcp, not curl.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --user-group --no-create-home --shell /usr/sbin/nologin voucher-relay
COPY --from=build /src/target/release/voucher-relay /usr/local/bin/voucher-relay
# The migrations are compiled into the binary (refinery's embed_migrations! in src/store), so
# only the config file goes beside it. Its addresses are 127.0.0.1: mount another file and
# point VOUCHER_RELAY_CONFIG at it, as docker-compose.yml does.
COPY queues.toml /etc/voucher-relay/queues.toml
ENV VOUCHER_RELAY_CONFIG=/etc/voucher-relay/queues.toml
USER voucher-relay
# admin.listen (/metrics, /healthz, /readyz, /console), then the CSQ and Electrum sandboxes.
EXPOSE 9464 8101 8102
ENTRYPOINT ["voucher-relay"]
CMD ["run"]
