#!/usr/bin/env bash
# Install test of the Debian packages, as a ship's IT officer would meet them: inside a fresh
# Debian 12 root made with debootstrap, the amd64 package installs (apt resolves its
# dependencies), runs, refuses its unedited config, accepts an edited one, upgrades over itself
# keeping the edited conffile, and purges cleanly. Then lintian checks all three packages and
# fails on any error.
#
#   packaging/install-test.sh [DEB_DIR]     (default target/debian; run as root)
#
# Needs the network to a Debian mirror (the one in /etc/apt/sources.list*). Installs
# debootstrap and lintian when missing. Nothing is cached: the root is made afresh and removed.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

dir=${1:-target/debian}
say() { echo "install-test: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"

shopt -s nullglob
debs=("$dir"/vessel-sync_*.deb)
amd64=("$dir"/vessel-sync_*_amd64.deb)
[ ${#amd64[@]} -eq 1 ] || die "want exactly one amd64 package in $dir (found ${#amd64[@]}): run packaging/cross-build.sh first"

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v lintian >/dev/null || missing+=(lintian)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- lintian: no errors and no warnings on any of the packages (overrides: packaging/lintian/) ------------------------------------------------
for deb in "${debs[@]}"; do
  say "lintian $(basename "$deb")"
  lintian --fail-on error,warning "$deb" \
    || die "lintian reports errors or warnings on $(basename "$deb")"
done

# --- a fresh Debian 12 root ---------------------------------------------------------------------
mirror=$(grep -rhoE '^(URIs:|deb) *https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
  | grep -oE 'https?://[^ ]+' | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/vessel-sync-root.XXXXXX)
chmod 0755 "$root" # mktemp makes it 0700; the root's / must be open to www-data
cleanup() {
  umount -l "$root/proc" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
t0=$(date +%s)
say "debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/tmp/install-test-debootstrap.log 2>&1 \
  || { tail -n 20 /tmp/install-test-debootstrap.log; die "debootstrap"; }
mount -t proc proc "$root/proc"
say "root ready in $(( $(date +%s) - t0 )) s"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive "$@"; }

cp "${amd64[0]}" "$root/tmp/vessel-sync.deb"
# The same package with a higher version, to upgrade over itself.
rm -rf /tmp/install-test-repack; mkdir -p /tmp/install-test-repack
dpkg-deb -R "${amd64[0]}" /tmp/install-test-repack/pkg
sed -i -E 's/^Version: (.*)$/Version: \1+upgrade1/' /tmp/install-test-repack/pkg/DEBIAN/control
dpkg-deb -b -Zxz /tmp/install-test-repack/pkg "$root/tmp/vessel-sync-upgrade.deb" >/dev/null
rm -rf /tmp/install-test-repack

# --- install ------------------------------------------------------------------------------------
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends /tmp/vessel-sync.deb >/tmp/install-test-apt.log 2>&1 \
  || { tail -n 30 /tmp/install-test-apt.log; die "apt-get install"; }
say "installed: $(in_root dpkg-query -W -f '${Package} ${Version} ${Architecture}' vessel-sync)"

in_root vessel-sync --version | grep -q '^vessel-sync ' || die "vessel-sync --version"
# The packaged binary carries no stand-in Moodle: its demo says where the demo lives.
set +e; demo_out=$(in_root vessel-sync demo 2>&1); demo_code=$?; set -e
[ "$demo_code" -eq 69 ] && [[ "$demo_out" == *"cargo run --release -- demo"* ]] \
  || die "installed 'vessel-sync demo': want exit 69 and where the demo lives, got $demo_code: $demo_out"
say "the installed binary has no demo or stand-in (vessel-sync demo: exit 69, says where it lives)"
in_root getent passwd vessel-sync >/dev/null || die "the sysusers file did not create user vessel-sync"
[ "$(stat -c '%a %U %G' "$root/etc/vessel-sync/agent.toml")" = "640 root www-data" ] \
  || die "agent.toml is $(stat -c '%a %U %G' "$root/etc/vessel-sync/agent.toml"), want 640 root www-data"
grep -qx /etc/vessel-sync/agent.toml "$root/var/lib/dpkg/info/vessel-sync.conffiles" || die "agent.toml is not a conffile"
[ -L "$root/etc/systemd/system/multi-user.target.wants/vessel-sync.service" ] || die "vessel-sync.service is not enabled"
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/vessel-sync-shore.service" ] || die "the shore unit was enabled"
for f in /usr/share/man/man1/vessel-sync.1.gz /usr/share/bash-completion/completions/vessel-sync \
  /usr/share/doc/vessel-sync/agent.toml.example /usr/lib/sysusers.d/vessel-sync.conf \
  /lib/systemd/system/vessel-sync-shore.service /usr/share/vessel-sync/moodle/local_vesselsync.zip; do
  [ -e "$root$f" ] || die "missing $f"
done

# The unedited config is refused with 78 (the unit's RestartPreventExitStatus), as the agent.
set +e
out=$(in_root runuser -u www-data -- vessel-sync check-config --config /etc/vessel-sync/agent.toml 2>&1)
rc=$?
set -e
[ $rc -eq 78 ] || die "check-config on the unedited config exited $rc, want 78: $out"
grep -q "CHANGE-ME" <<<"$out" || die "check-config did not name the placeholder: $out"

# Edited as the README says, it passes, run as the service's user.
in_root vessel-sync keygen --out /etc/vessel-sync/keys/shore-ops >/dev/null
sed -i 's/^id = "CHANGE-ME"/id = "mv-install-test"/' "$root/etc/vessel-sync/agent.toml"
in_root install -d -o www-data -g www-data -m 0750 /var/lib/vessel-sync
out=$(in_root runuser -u www-data -- vessel-sync check-config --config /etc/vessel-sync/agent.toml 2>&1) \
  || die "check-config on the edited config: $out"
in_root runuser -u www-data -- vessel-sync agent --once --config /etc/vessel-sync/agent.toml >/dev/null 2>&1 \
  || die "agent --once as www-data"
[ -f "$root/var/lib/vessel-sync/journal.db" ] || die "the agent wrote no journal"
say "install: ok (check-config 78 unedited, 0 edited; agent --once as www-data)"

# --- upgrade over itself --------------------------------------------------------------------------
in_root apt-get install -y -qq --no-install-recommends /tmp/vessel-sync-upgrade.deb >/tmp/install-test-apt.log 2>&1 \
  || { tail -n 30 /tmp/install-test-apt.log; die "upgrade"; }
in_root dpkg-query -W -f '${Version}' vessel-sync | grep -q '+upgrade1$' || die "upgrade did not take"
grep -q '^id = "mv-install-test"' "$root/etc/vessel-sync/agent.toml" || die "the upgrade lost the edited agent.toml"
[ ! -e "$root/etc/vessel-sync/agent.toml.dpkg-new" ] || die "upgrade left agent.toml.dpkg-new"
[ -L "$root/etc/systemd/system/multi-user.target.wants/vessel-sync.service" ] || die "upgrade disabled the agent"
say "upgrade: ok (edited conffile kept, unit still enabled)"

# --- purge --------------------------------------------------------------------------------------
in_root apt-get purge -y -qq vessel-sync >/tmp/install-test-apt.log 2>&1 \
  || { tail -n 30 /tmp/install-test-apt.log; die "purge"; }
! in_root dpkg-query -W -f '${Status}' vessel-sync 2>/dev/null | grep -q installed || die "still installed after purge"
for gone in /usr/bin/vessel-sync /etc/vessel-sync /lib/systemd/system/vessel-sync.service \
  /etc/systemd/system/multi-user.target.wants/vessel-sync.service; do
  [ ! -e "$root$gone" ] && [ ! -L "$root$gone" ] || die "purge left $gone"
done
[ -f "$root/var/lib/vessel-sync/journal.db" ] || die "purge removed the journal (it must be kept, see packaging/README.md)"
say "purge: ok (config, binary, units gone; the state directory kept as documented)"
say "all passed in $(( $(date +%s) - t0 )) s"
