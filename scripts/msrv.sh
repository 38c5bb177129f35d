#!/usr/bin/env bash
# Type-checks vessel-sync (all targets) with Debian 12's rustc 1.85 (package rustc-web from
# bookworm main), the compiler that cross-builds the ARM packages, to prove the MSRV in
# Cargo.toml (rust-version = "1.85") holds for the crate and every locked dependency.
# bookworm-security also carries a newer rustc-web (1.96), so the version is pinned; installs
# (or downgrades to) 1.85 when needed, which takes root.
set -euo pipefail
cd "$(dirname "$0")/.."

want=1.85
if ! /usr/bin/rustc --version 2>/dev/null | grep -q "^rustc ${want//./\\.}\."; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/msrv.sh: needs Debian's rustc $want: sudo apt-get install rustc-web=<1.85 version> cargo-web=<same>" >&2
    exit 1
  fi
  apt-get update -qq || true
  v=$(apt-cache madison rustc-web | awk '{print $3}' | grep "^${want//./\\.}\." | sort -V | tail -n1)
  if [ -z "$v" ]; then
    echo "scripts/msrv.sh: no rustc-web $want in the package indexes" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "rustc-web=$v" "cargo-web=$v" "libstd-rust-web-dev=$v"
fi
/usr/bin/rustc --version
RUSTC=/usr/bin/rustc /usr/bin/cargo check --locked --workspace --all-targets --target-dir target/msrv
RUSTC=/usr/bin/rustc /usr/bin/cargo check --locked --no-default-features --target-dir target/msrv
