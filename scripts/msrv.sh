#!/usr/bin/env bash
# Type-checks vessel-sync (all targets) with Debian 12's rustc 1.85 (package rustc-web), the compiler that
# cross-builds the ARM packages, to prove the MSRV in Cargo.toml (rust-version = "1.85") holds
# for the crate and every locked dependency. Installs rustc-web/cargo-web when missing (root).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/rustc ] || ! /usr/bin/rustc --version | grep -q '^rustc 1\.85'; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/msrv.sh: needs Debian's rustc 1.85: sudo apt-get install rustc-web cargo-web" >&2
    exit 1
  fi
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rustc-web cargo-web
fi
/usr/bin/rustc --version
RUSTC=/usr/bin/rustc /usr/bin/cargo check --locked --all-targets --target-dir target/msrv
