# Switchyard: the release binary and the example plugins on a small Debian.
#
#   docker build -t switchyard .
#   docker run -v $PWD/router.toml:/etc/switchyard/router.toml:ro \
#              -v $PWD/plugins:/plugins:ro -p 9180:9180 switchyard
#
# The build stage runs scripts/build-release: the same script (toolchain
# from rust-toolchain.toml, plugins for wasm32-wasip2, `cargo build
# --release --locked`) that scripts/demo runs, so the image holds what the
# project builds and tests.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-release

FROM debian:bookworm-slim
# librdkafka links OpenSSL (TLS, SASL) and zlib; CA certificates for TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin switchyard \
    && mkdir -p /etc/switchyard /plugins /var/cache/switchyard \
    && chown switchyard /var/cache/switchyard \
    && chmod 700 /var/cache/switchyard
COPY --from=build /src/dist/switchyard /usr/local/bin/switchyard
# The example plugins; mount your own over /plugins.
COPY --from=build /src/dist/plugins/ /plugins/
COPY deploy/router.toml /etc/switchyard/router.toml

USER switchyard
# Compiled plugins are cached here (mount a volume to keep them across
# restarts: a plugin seen before then loads in milliseconds). They are
# native code: the folder must be the router user's alone (mode 700), or
# the router does not use it.
ENV SWITCHYARD_CACHE_DIR=/var/cache/switchyard \
    SWITCHYARD_LOG_FORMAT=json
VOLUME ["/var/cache/switchyard"]
EXPOSE 9180
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 \
    CMD ["switchyard", "health", "--addr", "127.0.0.1:9180"]
# Exec form: switchyard is PID 1 and gets SIGTERM itself (graceful stop:
# records in flight finish, outputs are flushed, offsets committed).
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard"]
CMD ["run", "--config", "/etc/switchyard/router.toml"]
