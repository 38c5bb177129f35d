#!/usr/bin/env bash
# Builds vessel-sync for x86_64, aarch64 and armv7 (armhf) without Docker, tests the ARM builds
# under qemu-user, and makes the three Debian packages. Idempotent; runs on Debian 12 (bookworm).
#
#   packaging/cross-build.sh setup     install the toolchain (root): Debian's rustc-web 1.85, the
#                                      ARM standard libraries, cross C compilers, qemu-user, binfmt
#   packaging/cross-build.sh build     release builds of the shipped binary for the three targets
#                                      (--no-default-features: no test kit), each checked to hold
#                                      no stand-in
#   packaging/cross-build.sh test      under qemu: the unit tests for aarch64, and the shipped
#                                      aarch64 and armv7 binaries end to end (keys, a bundle built
#                                      and verified, an agent applying it, status, bench bundle)
#   packaging/cross-build.sh package   the three .debs into target/debian/
#   packaging/cross-build.sh all       all of the above (the default)
#   packaging/cross-build.sh lab       the lab binary (demo and every benchmark, with the test
#                                      kit) for each target, to target/lab/TRIPLE/vessel-sync, for
#                                      running `vessel-sync bench NAME` on a ship's own hardware
#
# Why this way: rustup cannot fetch other targets' standard library here, so the compiler is
# Debian's rustc-web 1.85 (the MSRV) with the arm64/armhf standard libraries copied out of
# Debian's libstd-rust-web-dev packages into its sysroot (installing them through dpkg pulls
# ~800 MB of ARM runtime and makes qemu hang). packaging/README.md explains the toolchain and
# the packages.
#
# Environment: TARGETS (default "x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
# armv7-unknown-linux-gnueabihf"), CARGO_TARGET_DIR (default target/cross).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

RUST_V=1.85            # Debian rustc-web version: the one present for amd64, arm64 and armhf
TARGETS=${TARGETS:-"x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cross}
# Debian's cargo and rustc, whatever rustup puts first on PATH (cross-compile.md, F4).
CARGO=/usr/bin/cargo
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc

say() { echo "cross-build: $*" >&2; }
die() { say "$*"; exit 1; }
sec() { date +%s; }

have_toolchain() {
  /usr/bin/rustc --version 2>/dev/null | grep -q "^rustc ${RUST_V//./\\.}\." || return 1
  local t
  for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    # The copied std must come from the very same rustc build (E0514 otherwise).
    ls "/usr/lib/rustlib/$t/lib/"libstd-*.rlib >/dev/null 2>&1 || return 1
    cmp -s "/usr/lib/rustlib/$t/.vessel-sync-std" <(/usr/bin/rustc --version) || return 1
  done
  command -v aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc qemu-aarch64 qemu-arm >/dev/null || return 1
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && [ -e /proc/sys/fs/binfmt_misc/qemu-arm ]
}

setup() {
  if have_toolchain; then say "toolchain present: $(/usr/bin/rustc --version)"; return; fi
  [ "$(id -u)" -eq 0 ] || die "setup needs root (apt-get, /usr/lib/rustlib, binfmt_misc): run it with sudo"
  local t0; t0=$(sec)
  # Foreign architectures only long enough to read their package indexes.
  dpkg --add-architecture arm64
  dpkg --add-architecture armhf
  # A broken foreign index on a mirror makes apt exit 100 for that suite; the version choice copes.
  apt-get update -qq || say "WARNING: apt-get update reported errors; continuing with the indexes it has"
  local v
  versions() { apt-cache madison "libstd-rust-web-dev:$1" | awk '{print $3}' | grep "^${RUST_V//./\\.}\." | sort -u; }
  v=$(comm -12 <(versions amd64) <(versions arm64) | comm -12 - <(versions armhf) | sort -V | tail -n1)
  [ -n "$v" ] || { dpkg --remove-architecture armhf; dpkg --remove-architecture arm64; die "no libstd-rust-web-dev $RUST_V common to amd64, arm64 and armhf in the package indexes"; }
  say "rustc-web $v"
  apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "rustc-web=$v" "cargo-web=$v" "libstd-rust-web-dev=$v" \
    gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross \
    binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf \
    qemu-user binfmt-support qemu-user-binfmt
  # The ARM std: rlibs only, copied where dpkg would put them (no --sysroot flags needed).
  local tmp; tmp=$(mktemp -d); chmod 755 "$tmp"
  (cd "$tmp" && apt-get download -qq "libstd-rust-web-dev:arm64=$v" "libstd-rust-web-dev:armhf=$v")
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
  for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    rm -rf "/usr/lib/rustlib/$t"
    cp -a "$tmp/x/usr/lib/rustlib/$t" "/usr/lib/rustlib/$t"
    /usr/bin/rustc --version >"/usr/lib/rustlib/$t/.vessel-sync-std"
  done
  rm -rf "$tmp"
  # Nothing of arm64/armhf is installed: drop them so later apt-get updates don't fetch them.
  dpkg --remove-architecture armhf
  dpkg --remove-architecture arm64
  apt-get update -qq || true
  # binfmt_misc, so that an ARM test can exec the ARM binary (systemd may not be PID 1 here).
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || say "WARNING: cannot mount binfmt_misc"
  fi
  update-binfmts --enable qemu-aarch64 || true
  update-binfmts --enable qemu-arm || true
  have_toolchain || die "toolchain still incomplete after setup (see the messages above)"
  say "toolchain ready in $(( $(sec) - t0 )) s: $(/usr/bin/rustc --version)"
}

# The shipped binary: without the `lab` feature, so without the test kit (stand-in Moodle,
# fault proxy, throwaway databases). A lab build of a target (the x86_64 test run in .ci/run,
# or `lab` below) writes its binary to the same path, so package() builds again (a no-op that
# puts the shipped one back, or a relink) and checks again, right before packing.
build_ship() { # TRIPLE
  "$CARGO" build --release --locked --no-default-features --target "$1"
  check_ship "$1"
}

check_ship() { # TRIPLE: the binary at the packaged path carries no stand-in
  local bin=$CARGO_TARGET_DIR/$1/release/vessel-sync out
  # Strings only the test kit has: the stand-in's token and its php script.
  if grep -a -q -e "f00dfacef00dfacef00dfacef00dface" -e "The stand-in Moodle's php" "$bin"; then
    die "$bin holds test-kit code (built with the lab feature?): the package must not ship it"
  fi
  # And `demo` explains where the demo lives instead of running one.
  set +e
  out=$(run_arm "$1" "$bin" demo 2>&1); local code=$?
  set -e
  [ "$code" -eq 69 ] && [[ "$out" == *"not in this packaged build"* ]] \
    || die "$bin demo: expected exit 69 and the packaged-build explanation, got $code: $out"
}

build() {
  # One target after the other: building the three in one cargo run was measured at the same
  # time on 2 cores (1,034 s against 1,017 s), and per target the figures are clearer.
  local t t0
  for t in $TARGETS; do
    t0=$(sec)
    build_ship "$t"
    say "built $t in $(( $(sec) - t0 )) s: $(stat -c %s "$CARGO_TARGET_DIR/$t/release/vessel-sync") bytes (stripped), no stand-in"
  done
}

lab() {
  local t t0
  for t in $TARGETS; do
    t0=$(sec)
    "$CARGO" build --release --locked --target "$t"
    mkdir -p "target/lab/$t"
    cp "$CARGO_TARGET_DIR/$t/release/vessel-sync" "target/lab/$t/vessel-sync"
    say "lab binary for $t in $(( $(sec) - t0 )) s: target/lab/$t/vessel-sync (copy it on board and run 'vessel-sync bench NAME')"
  done
}

run_arm() { # TRIPLE ARGS...: run a built ARM binary under qemu, as the runners in .cargo/config.toml do
  local t=$1; shift
  case $t in
    aarch64-*) QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 "$@" ;;
    armv7-*) QEMU_LD_PREFIX=/usr/arm-linux-gnueabihf qemu-arm "$@" ;;
    *) "$@" ;;
  esac
}

smoke_arm() { # TRIPLE: the shipped binary of TRIPLE under qemu, end to end on board
  local t=$1 bin=$CARGO_TARGET_DIR/$1/release/vessel-sync d t0
  [ -x "$bin" ] || die "no build at $bin: run 'packaging/cross-build.sh build' first"
  t0=$(sec)
  d=$(mktemp -d)
  run_arm "$t" "$bin" --version
  # An operator key, a bundle built, signed and verified.
  run_arm "$t" "$bin" keygen --out "$d/ops" >/dev/null
  mkdir -p "$d/files" "$d/inbox"
  printf 'kind,legacy_id,moodle_key,course\ncourse,LMS-1,SAFETY-101,\n' >"$d/files/map.csv"
  cat >"$d/spec.toml" <<SPEC
recipient = "mv-smoke"
sequence = 1
[[command]]
type = "set_mapping"
files = ["files/map.csv"]
SPEC
  run_arm "$t" "$bin" bundle build --spec "$d/spec.toml" --key "$d/ops.key" --out "$d/b.vsb"
  run_arm "$t" "$bin" bundle verify "$d/b.vsb" --trust "$d/ops.pub" --vessel mv-smoke
  # The agent on board: the state lock, the journal (SQLite), admission (zstd, Ed25519), the
  # work lock, a command applied once; then status reads it back.
  cat >"$d/agent.toml" <<TOML
version = 1
[vessel]
id = "mv-smoke"
[paths]
state_dir = "$d/state"
inbox = "$d/inbox"
[keyring]
trusted = ["$d/ops.pub"]
[inbox]
settle = "0s"
TOML
  cp "$d/b.vsb" "$d/inbox/b.vsb"
  run_arm "$t" "$bin" agent --once --config "$d/agent.toml"
  run_arm "$t" "$bin" status --json --config "$d/agent.toml" | grep -q '"course": 1' \
    || die "$t: the agent did not apply the bundle's mapping"
  run_arm "$t" "$bin" bench bundle --size-mb 16 --json
  rm -rf "$d"
  say "$t smoke run under qemu: $(( $(sec) - t0 )) s"
}

test_arm() {
  local t0
  if [[ " $TARGETS " == *" aarch64-unknown-linux-gnu "* ]]; then
    t0=$(sec)
    # What could differ on ARM is the machine code, not the kernel: qemu-user hands every
    # system call to the host's kernel, so file locks, fsync and rename behave as natively
    # whatever runs them. So under qemu-aarch64: every unit and property test of the workspace
    # (the state machines, the codec, envelopes and keys, the stores), and the shipped binary
    # end to end (smoke_arm). The integration suite proves logic that does not depend on the
    # architecture; it runs once, natively, in the README's test command (as does the
    # real-Moodle suite, which proves Moodle).
    # The release profile with its thin LTO, as the package: the tests share the dependencies
    # just compiled for the shipped binary. Measured on 2 cores after a cold build: 231 s to
    # build the unit tests this way, about 400 s without LTO (every dependency compiled again).
    "$CARGO" test --release --locked --workspace --no-default-features \
      --target aarch64-unknown-linux-gnu --lib
    say "aarch64 unit tests under qemu: $(( $(sec) - t0 )) s (build included)"
    smoke_arm aarch64-unknown-linux-gnu
  fi
  if [[ " $TARGETS " == *" armv7-unknown-linux-gnueabihf "* ]]; then
    # The shipped armv7 binary itself (no test build for this target: one more compile of
    # every dependency in CI).
    smoke_arm armv7-unknown-linux-gnueabihf
  fi
}

package() {
  command -v cargo-deb >/dev/null || die "cargo-deb is missing: cargo install cargo-deb --locked --version ${CARGO_DEB_V}"
  local t assets
  assets=target/package-assets
  # Man pages and shell completions, generated from the CLI definition by a host build.
  local host=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/vessel-sync
  build_ship x86_64-unknown-linux-gnu
  rm -rf "$assets"; mkdir -p "$assets/man" "$assets/completions"
  "$host" manpages --out "$assets/man" >/dev/null
  gzip -9n "$assets"/man/*.1
  "$host" completions bash >"$assets/completions/vessel-sync"
  "$host" completions zsh >"$assets/completions/_vessel-sync"
  "$host" completions fish >"$assets/completions/vessel-sync.fish"
  # The companion Moodle plugin as Moodle's plugin installer takes it (a zip of vesselsync/).
  mkdir -p "$assets/moodle"
  (cd plugins/local && python3 -m zipfile -c "../../$assets/moodle/local_vesselsync.zip" vesselsync)
  mkdir -p target/debian
  for t in $TARGETS; do
    # The shipped binary again (a test build may have left the lab one at this path).
    build_ship "$t"
    # The packages promise glibc 2.34 (Depends: libc6 (>= 2.34)); a newer symbol would break
    # that promise on older ship images.
    local glibc
    glibc=$(objdump -T "$CARGO_TARGET_DIR/$t/release/vessel-sync" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
    [ "$(printf '%s\n' "$glibc" "$GLIBC_MAX" | sort -V | tail -n1)" = "$GLIBC_MAX" ] \
      || die "$t binary needs glibc $glibc, the packages declare $GLIBC_MAX: raise Depends in Cargo.toml and the README, or find the symbol"
    say "$t needs glibc $glibc"
    # --no-build: the binary above (Debian's 1.85 compiler); --no-strip: the release profile strips.
    cargo deb --no-build --no-strip --locked --target "$t" \
      --output target/debian/
  done
  ls -l target/debian/*.deb
}

GLIBC_MAX=2.34        # what [package.metadata.deb] depends promises
CARGO_DEB_V=3.8.0   # the cargo-deb version CI installs (.ci/run)
case ${1:-all} in
  setup) setup ;;
  build) setup; build ;;
  test) setup; test_arm ;;
  package) package ;;
  all) setup; build; test_arm; package ;;
  lab) setup; lab ;;
  -h|--help|help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown step '$1' (setup, build, test, package, all, lab)" ;;
esac
