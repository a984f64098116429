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

# Builds the test broker (nisshi, a Kafka-API broker) once per machine.
ensure_nisshi() {
    if [ -x "$NISSHI_BIN" ]; then
        return
    fi
    log "building the test broker nisshi $NISSHI_VERSION (once per machine, ~15 minutes)"
    cargo "+$TOOLCHAIN" install nisshi --version "$NISSHI_VERSION" --locked \
        --root "$TOOLS_DIR/nisshi-$NISSHI_VERSION"
}
