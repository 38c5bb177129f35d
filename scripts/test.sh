#!/usr/bin/env bash
# Runs every test of vessel-sync: unit tests, the integration tests (the real binary on real
# files, SIGKILL crash scenarios, a real systemd notify socket, real PostgreSQL and MariaDB
# servers loaded with Moodle's schema, a real HTTPS shore receiver behind a fault proxy) and
# doc tests. Each test starts its own throwaway database server on a free loopback port.
# Installs what the tests need from Debian's packages when it is missing (run as root, or
# install it yourself): systemd (systemd-analyze verifies the unit file), postgresql and
# postgresql-client, mariadb-server and mariadb-client, PHP 8.2 and zstd (the real Moodle),
# chromium (the dashboard's browser test).
# Then the shore's tests run a second time with the shore on PostgreSQL
# (VESSEL_SYNC_TEST_SHORE_STORE=postgres; tests/shore_store.rs runs on it in both passes), and
# the real-Moodle suite a second time on Moodle 4.5 LTS (VESSEL_SYNC_MOODLE_VERSION=4.5).
# Extra arguments go to `cargo test`, e.g. ./scripts/test.sh crash. $CARGO names another cargo:
# CI runs the suite with Debian's rustc 1.85 in release mode, sharing the amd64 package's build
# (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
# The real Moodle 5.0 the end-to-end suite installs (tests/real/): Debian's PHP 8.2 with the
# extensions shared/moodle/README.md lists, and zstd to unpack the source tarball.
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
# The fleet dashboard is tested in a real headless browser.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
for ext in cli pgsql mysql xml mbstring curl zip gd intl soap; do
  dpkg -s "php8.2-$ext" >/dev/null 2>&1 || missing+=("php8.2-$ext")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "scripts/test.sh: please install: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# The companion Moodle plugin parses (php -l) before any test installs it into a Moodle.
for f in $(find plugins -name '*.php' | sort); do
  php -l "$f" >/dev/null || { php -l "$f"; exit 1; }
done

"${CARGO:-cargo}" test --workspace --locked "$@"

# The shore's tests once more with the shore's records in PostgreSQL (a throwaway server),
# unless a test filter was given (./scripts/test.sh crash runs what was asked for, once).
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
  case " $* " in *" --no-run "*) exit 0 ;; esac
  echo "== the shore's tests again, on PostgreSQL =="
  # --workspace as above: the same feature set, so nothing is compiled again.
  VESSEL_SYNC_TEST_SHORE_STORE=postgres "${CARGO:-cargo}" test --workspace --locked --test integration "$@" -- \
    uplink:: keys:: delta:: imports:: hostile_shore::
  # Moodle 4.5 LTS, which most fleets run: the real-Moodle suite once more on it (PostgreSQL;
  # the 4.5-specific tests already ran above; not the stand-in's conformance, which is to 5.0,
  # nor the users benchmark; the pass took 229 s with them in CI).
  echo "== the real-Moodle suite again, on Moodle 4.5 LTS (PostgreSQL) =="
  VESSEL_SYNC_MOODLE_VERSION=4.5 "${CARGO:-cargo}" test --workspace --locked --test integration "$@" -- \
    real:: --skip mariadb --skip moodle45 --skip profile --skip conformance --skip bench_users
fi
