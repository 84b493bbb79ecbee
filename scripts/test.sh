#!/usr/bin/env bash
# Runs every check and test of the project, installing what a fresh machine
# lacks first. This is the README's test command and all that CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean clone builds everything once, so incremental caches would only take
# disk (several GB of it).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  step "installing cargo-fuzz (builds the fuzz target)"
  cargo install cargo-fuzz --locked
fi

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "tests (the cluster tests start Debian's redis-server on free loopback ports)"
if [ ! -x /usr/bin/redis-server ]; then
  echo "installing Debian's redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server
  # Only the tests' own servers are wanted, not the packaged service.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
fi
cargo test --workspace --locked

step "client compatibility: stomp.py, and real telnet typed into a tmux pane"
for tool in telnet tmux; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing Debian's $tool"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$tool"
  fi
done
# `cargo test` built target/debug/stompbox for the integration tests; a
# separate `cargo build -p stompbox` would resolve tokio's features without the
# test suite's and build every dependency a second time.
test -x target/debug/stompbox || { echo "target/debug/stompbox is missing after cargo test" >&2; exit 1; }
venv=target/compat-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$venv"; }
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/compat/requirements.txt
STOMPBOX_BIN=target/debug/stompbox "$venv/bin/python" -m pytest -q tests/compat

step "browser tests: the chat page and @stomp/stompjs in headless Chromium"
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error && STOMPBOX_BIN="$PWD/../../target/debug/stompbox" npm test)

step "deployment files (hadolint, systemd-analyze)"
bash scripts/check-deploy.sh

step "fuzz target builds (stable, no sanitizer)"
(cd stomp-codec && cargo fuzz build -s none decode)

step "benchmarks compile"
cargo bench --workspace --locked --no-run

printf '\nall checks passed\n'
