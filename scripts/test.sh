#!/usr/bin/env bash
# Runs every test of vessel-sync: unit tests, the integration tests (the real binary on real
# files, SIGKILL crash scenarios, a real systemd notify socket) and doc tests.
# Installs what the tests need from Debian's packages when it is missing (run as root, or
# install it yourself: systemd provides systemd-analyze, used to verify the unit file).
# Extra arguments go to `cargo test`, e.g. ./scripts/test.sh crash
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "scripts/test.sh: please install: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

cargo test --locked "$@"
