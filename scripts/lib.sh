# Shared by the scripts in this folder. Source it; do not run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The toolchain rust-toolchain.toml pins (rustup auto-install may be off).
TOOLCHAIN="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$ROOT/rust-toolchain.toml")"
# Tools built once per machine and found again by later runs (and by CI
# runs of other clones on the same machine).
TOOLS_DIR="${SWITCHYARD_TOOLS_DIR:-$HOME/.cache/switchyard}"
NISSHI_VERSION="0.8.1"
NISSHI_BIN="$TOOLS_DIR/nisshi-$NISSHI_VERSION/bin/nisshi"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Commands to run when the script exits, last registered first.
EXIT_COMMANDS=()
run_exit_commands() {
    local i
    for ((i = ${#EXIT_COMMANDS[@]} - 1; i >= 0; i--)); do
        eval "${EXIT_COMMANDS[$i]}" || true
    done
}
trap run_exit_commands EXIT
on_exit() { EXIT_COMMANDS+=("$1"); }

# Installs the pinned toolchain with rustfmt, clippy and the wasm target.
ensure_toolchain() {
    if ! command -v rustup >/dev/null 2>&1; then
        echo "rustup is required (https://rustup.rs)" >&2
        exit 1
    fi
    if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
        log "installing Rust $TOOLCHAIN"
        rustup toolchain install "$TOOLCHAIN" --profile minimal \
            --component rustfmt --component clippy --target wasm32-wasip2
    fi
    # Idempotent, and cheap when already there.
    rustup component add --toolchain "$TOOLCHAIN" rustfmt clippy >/dev/null 2>&1
    rustup target add --toolchain "$TOOLCHAIN" wasm32-wasip2 >/dev/null 2>&1
}

# C toolchain pieces librdkafka's build needs (OpenSSL headers for TLS/SASL).
# Debian packages: what building needs, and what the tests need too.
BUILD_PACKAGES=(build-essential pkg-config libssl-dev)
TEST_PACKAGES=("${BUILD_PACKAGES[@]}" python3-venv)

# Installs the Debian packages named (default: the tests' ones) if missing.
ensure_system_packages() {
    local missing=() wanted=("$@")
    [ "${#wanted[@]}" -gt 0 ] || wanted=("${TEST_PACKAGES[@]}")
    for pkg in "${wanted[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
    fi
}

# Builds the test broker (nisshi, a Kafka-API broker) once per machine.
ensure_nisshi() {
    if [ -x "$NISSHI_BIN" ]; then
        return
    fi
    log "building the test broker nisshi $NISSHI_VERSION (once per machine, ~15 minutes)"
    # A kept target dir lets an interrupted build resume where it stopped.
    cargo "+$TOOLCHAIN" install nisshi --version "$NISSHI_VERSION" --locked \
        --root "$TOOLS_DIR/nisshi-$NISSHI_VERSION" \
        --target-dir "${NISSHI_BUILD_DIR:-$TOOLS_DIR/nisshi-build}"
}

# cargo-deny checks the dependencies' licenses, bans and sources against
# deny.toml (offline; its advisory check needs the RustSec database).
CARGO_DENY_VERSION="0.20.2"
CARGO_DENY_BIN="$TOOLS_DIR/cargo-deny-$CARGO_DENY_VERSION/bin/cargo-deny"
ensure_cargo_deny() {
    if [ -x "$CARGO_DENY_BIN" ]; then
        return
    fi
    log "building cargo-deny $CARGO_DENY_VERSION (once per machine, a few minutes)"
    cargo "+$TOOLCHAIN" install cargo-deny --version "$CARGO_DENY_VERSION" --locked \
        --root "$TOOLS_DIR/cargo-deny-$CARGO_DENY_VERSION" \
        --target-dir "$TOOLS_DIR/cargo-deny-build"
}

# Makes the virtualenv DIR hold the pip requirements that follow, unless
# the Python code CHECK already passes in it (idempotent, and quiet then).
ensure_venv() {
    local dir="$1" check="$2"
    shift 2
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" 2>/dev/null; then
        return
    fi
    log "installing $* into $dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet "$@"
}

# Python plugins: componentize-py builds them into components, pytest runs
# their unit tests natively.
COMPONENTIZE_PY_VERSION="0.25.1"
PYTEST_VERSION="9.2.0"
PLUGIN_PYTHON_VENV="$TOOLS_DIR/venv-componentize-py-$COMPONENTIZE_PY_VERSION"
ensure_plugin_python() {
    ensure_venv "$PLUGIN_PYTHON_VENV" "
from importlib.metadata import version
assert version('componentize-py') == '$COMPONENTIZE_PY_VERSION'
assert version('pytest') == '$PYTEST_VERSION'" \
        "componentize-py==$COMPONENTIZE_PY_VERSION" "pytest==$PYTEST_VERSION"
}

# TypeScript plugins: esbuild bundles them, componentize-js turns the
# bundle into a component, tsx runs their unit tests on node's test runner.
# `npm ci` installs the versions plugins/typescript/package-lock.json pins
# into plugins/typescript/node_modules (where `switchyard build` and the
# test fixtures find them) and into npm's cache, from which the projects
# `switchyard new --lang typescript` writes install offline.
ensure_node_plugins() {
    if ! command -v npm >/dev/null; then
        ensure_system_packages nodejs npm
    fi
    if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
        echo "node $(node --version) is too old: the TypeScript plugins' tools need node 20 or newer" >&2
        exit 1
    fi
    local dir="$ROOT/plugins/typescript" stamp="$ROOT/plugins/typescript/node_modules/.switchyard-lock"
    if [ -f "$stamp" ] && cmp -s "$stamp" "$dir/package-lock.json"; then
        return
    fi
    log "installing the TypeScript plugins' tools (npm ci in plugins/typescript)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$stamp"
}

# A project `switchyard new --lang typescript` writes has no lockfile: an
# offline install of it resolves its tools' versions from the package
# metadata in npm's cache, which `npm ci` (installing from a lockfile)
# never fetches. One install of the template's tools, thrown away, puts
# the metadata and the packages of the whole tree in the cache.
ensure_npm_cache_for_new_projects() {
    local template="$ROOT/host/templates/typescript/package.json"
    local stamp="$TOOLS_DIR/npm-new-project.json"
    if [ -f "$stamp" ] && cmp -s "$stamp" "$template"; then
        return
    fi
    log "caching the tools of new TypeScript projects in npm's cache"
    local tmp
    tmp="$(mktemp -d)"
    node -e '
const template = require(process.argv[1]);
const project = { name: "switchyard-new-project-tools", private: true, devDependencies: template.devDependencies };
require("fs").writeFileSync(process.argv[2], JSON.stringify(project, null, 2));
' "$template" "$tmp/package.json"
    (cd "$tmp" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error)
    rm -rf "$tmp"
    mkdir -p "$TOOLS_DIR"
    cp "$template" "$stamp"
}

# kafka-python (an independent, pure-Python Kafka client) for the interop
# test. lz4 and zstandard: to read what Switchyard produces compressed.
KAFKA_PYTHON_VERSION="2.3.3"
# Prometheus's own Python client parses the metrics in the tests.
PROMETHEUS_CLIENT_VERSION="0.26.0"
PYTHON_VENV="$TOOLS_DIR/venv-kafka-python-$KAFKA_PYTHON_VERSION"
ensure_kafka_python() {
    ensure_venv "$PYTHON_VENV" "
import kafka, lz4, zstandard, prometheus_client
from importlib.metadata import version
assert version('prometheus-client') == '$PROMETHEUS_CLIENT_VERSION'" \
        "kafka-python==$KAFKA_PYTHON_VERSION" lz4 zstandard \
        "prometheus-client==$PROMETHEUS_CLIENT_VERSION"
}

# The schema tests' independent encoders and decoders: confluent-kafka's
# schema-registry serializers (with their in-process mock registry) and
# fastavro.
SCHEMA_CONFLUENT_KAFKA_VERSION="2.16.1"
FASTAVRO_VERSION="1.13.1"
SCHEMA_PYTHON_VENV="$TOOLS_DIR/venv-schemas-$SCHEMA_CONFLUENT_KAFKA_VERSION"
ensure_schema_python() {
    ensure_venv "$SCHEMA_PYTHON_VENV" "
import fastavro, google.protobuf, jsonschema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from importlib.metadata import version
assert version('confluent-kafka') == '$SCHEMA_CONFLUENT_KAFKA_VERSION'
assert version('fastavro') == '$FASTAVRO_VERSION'" \
        "confluent-kafka[avro,protobuf,json,schemaregistry]==$SCHEMA_CONFLUENT_KAFKA_VERSION" \
        "fastavro==$FASTAVRO_VERSION"
}

# The Kubernetes manifests are validated offline against the API's
# schemas, which kubernetes-validate bundles (its PyYAML reads them for the
# consistency checks too).
KUBERNETES_VALIDATE_VERSION="1.37.0"
KUBERNETES_PYTHON_VENV="$TOOLS_DIR/venv-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
ensure_kubernetes_validate() {
    ensure_venv "$KUBERNETES_PYTHON_VENV" "
import yaml, kubernetes_validate
from importlib.metadata import version
assert version('kubernetes-validate') == '$KUBERNETES_VALIDATE_VERSION'" \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
}

# Starts the test broker on a free loopback port in a fresh folder and
# exports SWITCHYARD_TEST_BROKER; it stops when this shell exits.
start_test_broker() {
    local port dir
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    dir="$(mktemp -d -t switchyard-broker.XXXXXX)"
    (cd "$dir" && exec "$NISSHI_BIN" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://nisshi/ >broker.log 2>&1) &
    BROKER_PID=$!
    on_exit "kill $BROKER_PID 2>/dev/null; wait $BROKER_PID 2>/dev/null; rm -rf '$dir'"
    for _ in $(seq 1 300); do
        if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            export SWITCHYARD_TEST_BROKER="127.0.0.1:$port"
            log "test broker listening on $SWITCHYARD_TEST_BROKER (pid $BROKER_PID)"
            return
        fi
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            cat "$dir/broker.log" >&2
            echo "the test broker exited" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "the test broker did not listen on 127.0.0.1:$port within 30 s" >&2
    exit 1
}

# The example plugins a release ships (the crates of plugins/ that are not
# test fixtures), as their .wasm names.
EXAMPLE_PLUGINS=(hello tenant_partitioner envelope_router redact fan_out filter field_router json_bridge)

# Builds what a deployment runs into dist/: the release binary and the
# example plugins. scripts/demo and the Dockerfile both build this way.
build_release() {
    log "building the example plugins (wasm32-wasip2) and the router (release)"
    (cd "$ROOT/plugins" && cargo build --release --target wasm32-wasip2 --workspace --locked --quiet)
    (cd "$ROOT" && cargo build --release --locked --quiet -p switchyard)
    rm -rf "$ROOT/dist"
    mkdir -p "$ROOT/dist/plugins"
    # Debug info stays in target/release (for profiling); the shipped
    # binary keeps its symbols but not the line tables: 160 MB -> 35 MB.
    strip --strip-debug -o "$ROOT/dist/switchyard" "$ROOT/target/release/switchyard"
    local plugin
    for plugin in "${EXAMPLE_PLUGINS[@]}"; do
        cp "$ROOT/plugins/target/wasm32-wasip2/release/$plugin.wasm" "$ROOT/dist/plugins/"
    done
}

# confluent-kafka (Python over the same librdkafka version the router
# bundles) for the benchmark's hand-written Python router.
CONFLUENT_KAFKA_VERSION="2.12.1"
BENCH_VENV="$TOOLS_DIR/venv-confluent-kafka-$CONFLUENT_KAFKA_VERSION"
ensure_bench_python() {
    ensure_venv "$BENCH_VENV" "import confluent_kafka" "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
}

# kafkajs and its LZ4 codec, for the hand-written node router the
# benchmarks compare with.
KAFKAJS_VERSION="2.2.4"
KAFKAJS_LZ4_VERSION="1.2.1"
BENCH_NODE_DIR="$TOOLS_DIR/node-kafkajs-$KAFKAJS_VERSION"
ensure_bench_node() {
    if [ -f "$BENCH_NODE_DIR/node_modules/kafkajs-lz4/package.json" ]; then
        return
    fi
    log "installing kafkajs $KAFKAJS_VERSION into $BENCH_NODE_DIR"
    mkdir -p "$BENCH_NODE_DIR"
    npm install --prefix "$BENCH_NODE_DIR" --no-audit --no-fund --loglevel=error \
        "kafkajs@$KAFKAJS_VERSION" "kafkajs-lz4@$KAFKAJS_LZ4_VERSION"
}
