#!/usr/bin/env bash
# Tests of the Debian package (as root; CI is root). Run after scripts/package-deb.sh:
#
#   scripts/deb-tests.sh [dist/livenessd_VERSION_ARCH.deb]     (default: the newest dist/*.deb)
#
#  1. lintian: no errors (warnings are printed; overrides live in scripts/deb/lintian-overrides).
#  2. A list of every file on the root file system, then `apt-get install ./the.deb` (Depends
#     resolve), checks of what a user relies on (binary, config, models, user, completions, man
#     page, a verdict on samples/astronaut.png), `apt-get remove` (the operator's config stays), then
#     `apt-get purge`, and the file list again: it must be the same. The difference, when there is
#     one, is printed: those are the files the package left behind.
# Idempotent: a livenessd left installed (or half-removed) by an earlier run is purged first.
# DEB_TESTS_EXCLUDE: more paths (space-separated) to leave out of the file lists, for a development
# machine where other work writes files meanwhile (e.g. DEB_TESTS_EXCLUDE=/work).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

fail() { printf '\ndeb-tests: FAIL: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || fail "run as root (it installs and purges the package)"

DEB="${1:-}"
if [ -z "$DEB" ]; then
    for candidate in dist/livenessd_*.deb; do
        if [ -f "$candidate" ] && { [ -z "$DEB" ] || [ "$candidate" -nt "$DEB" ]; }; then DEB="$candidate"; fi
    done
fi
if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then fail "no package: run scripts/package-deb.sh first (or pass the .deb)"; fi
DEB="$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")"
for tool in lintian apt-get dpkg-deb man; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (Debian packages: lintian apt man-db)"
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/livenessd-deb-tests.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- 1. lintian ---------------------------------------------------------------------------------
say "lintian $(basename "$DEB")"
# Runs as root here (CI); lintian only warns about that. --pedantic shows the info tags too.
# Exit status: 0 fine, 2 a tag at --fail-on's level (error, the default), 1 lintian itself failed.
status=0
lintian --pedantic --display-info --fail-on error "$DEB" > "$WORK/lintian.txt" 2>&1 || status=$?
grep -v 'running with root privileges is not recommended' "$WORK/lintian.txt" | sed 's/^/    /' || true
if [ "$status" -eq 2 ] || grep -q '^E: ' "$WORK/lintian.txt"; then fail "lintian reports errors (above)"; fi
[ "$status" -eq 0 ] || fail "lintian did not run (exit status $status, above)"
say "lintian: no errors ($(grep -c '^W: ' "$WORK/lintian.txt" || true) warnings, $(grep -c '^I: ' "$WORK/lintian.txt" || true) info)"

# --- 2. install, use, remove, purge -------------------------------------------------------------
installed_state() { dpkg-query -W -f='${db:Status-Abbrev}' livenessd 2>/dev/null | tr -d ' ' || true; }
if [ -n "$(installed_state)" ] && [ "$(installed_state)" != "un" ]; then
    say "purging the livenessd left by an earlier run ($(installed_state))"
    apt-get purge -y -q livenessd >/dev/null
fi

snapshot() { # every path on the root file system, with its type, sorted
    local prune=(/proc /sys /dev /run/user /tmp /var/tmp
        # apt's own caches and lists: apt-get writes them whatever it installs.
        /var/cache/apt /var/lib/apt/lists
        # logs: dpkg.log, apt/history.log and term.log record every run.
        /var/log
        "$ROOT" "$WORK" "${LIVENESSD_TEST_ASSETS:-$ROOT/../shared}")
    local extra
    for extra in ${DEB_TESTS_EXCLUDE:-}; do prune+=("$extra"); done
    local expression=() path
    for path in "${prune[@]}"; do expression+=(-path "$path" -o); done
    find / -xdev \( "${expression[@]}" -false \) -prune -o -printf '%y %p\n' 2>/dev/null | LC_ALL=C sort
}
packages() { dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | sort; }

say "file list before installing"
snapshot > "$WORK/before.txt"
packages > "$WORK/packages-before.txt"

say "apt-get install $(basename "$DEB")"
apt-get install -y -q --no-install-recommends "$DEB" > "$WORK/install.log" 2>&1 \
    || { cat "$WORK/install.log"; fail "apt-get install failed"; }
packages > "$WORK/packages-after.txt"
# Packages that came in only as livenessd's dependencies (none on a machine set up with
# scripts/debian-packages.txt); purged again at the end so that the file lists compare.
comm -13 "$WORK/packages-before.txt" "$WORK/packages-after.txt" | grep -vx livenessd > "$WORK/new-dependencies.txt" || true
[ ! -s "$WORK/new-dependencies.txt" ] || say "dependencies installed with it: $(tr '\n' ' ' < "$WORK/new-dependencies.txt")"

check() { # description, command...
    local what="$1"; shift
    if "$@" > "$WORK/check.out" 2>&1; then
        printf '    ok    %s\n' "$what"
    else
        sed 's/^/          /' "$WORK/check.out"
        fail "$what"
    fi
}
has_line() { grep -qx -- "$2" "$1"; }
has_text() { grep -qF -- "$2" "$1"; }

[ "$(command -v livenessd)" = /usr/bin/livenessd ] || fail "livenessd is not /usr/bin/livenessd on PATH ($(command -v livenessd || echo none))"
check "livenessd --version: $(/usr/bin/livenessd --version)" /usr/bin/livenessd --version
check "the binary is stripped" sh -c '! readelf -S /usr/bin/livenessd | grep -q "\.symtab"'
check "the binary needs no Swift toolchain (no libswift*.so, no run path)" \
    sh -c '! readelf -d /usr/bin/livenessd | grep -Eq "libswiftCore|RPATH|RUNPATH"'
check "the config is a conffile" sh -c 'dpkg-query -W -f="\${Conffiles}\n" livenessd | grep -q "^ /etc/livenessd/livenessd.yaml "'
check "no /usr/local path in the installed config and units" \
    sh -c '! grep -n /usr/local /etc/livenessd/livenessd.yaml /lib/systemd/system/livenessd.service /lib/systemd/system/livenessd.socket'
# config check prints the effective settings (JSON) with the model files it located.
(cd / && env -u LIVENESSD_MODEL -u LIVENESSD_MINIFASNET -u LIVENESSD_DETECTOR \
    livenessd config check /etc/livenessd/livenessd.yaml) > "$WORK/config.json" 2>&1 \
    || { cat "$WORK/config.json"; fail "livenessd config check /etc/livenessd/livenessd.yaml"; }
for model in /usr/share/livenessd/face-liveness-vit/model.pt /usr/share/livenessd/silent-face \
    /usr/share/livenessd/yunet/face_detection_yunet.onnx; do
    check "config check finds $model" has_text "$WORK/config.json" "$model"
done
check "user livenessd: system account, no login shell, no home" \
    sh -c 'getent passwd livenessd | awk -F: '"'"'$3 < 1000 && $6 == "/nonexistent" && $7 == "/usr/sbin/nologin" { found = 1 } END { exit !found }'"'"
id -nG livenessd | tr ' ' '\n' > "$WORK/groups.txt"
check "user livenessd is in groups livenessd and video ($(id -nG livenessd))" \
    sh -c "grep -qx livenessd '$WORK/groups.txt' && grep -qx video '$WORK/groups.txt'"
check "bash completion loads" bash -c 'source /usr/share/bash-completion/completions/livenessd && complete -p livenessd'
check "zsh completion installed" test -s /usr/share/zsh/vendor-completions/_livenessd
check "fish completion installed" test -s /usr/share/fish/vendor_completions.d/livenessd.fish
if grep -rqs 'path-exclude=/usr/share/man' /etc/dpkg/dpkg.cfg.d/; then
    say "note: dpkg here leaves out /usr/share/man (path-exclude in /etc/dpkg/dpkg.cfg.d): no man page to find"
fi
check "man -w livenessd: $(man -w livenessd 2>/dev/null || echo none)" sh -c '[ "$(man -w livenessd)" = /usr/share/man/man1/livenessd.1.gz ]'
check "the man page renders without warnings" \
    sh -c 'test -z "$(MANWIDTH=80 man --warnings -l /usr/share/man/man1/livenessd.1.gz 2>&1 >/dev/null)"'
if command -v systemd-analyze >/dev/null 2>&1; then
    check "systemd-analyze verify accepts the installed units" \
        systemd-analyze verify /lib/systemd/system/livenessd.service /lib/systemd/system/livenessd.socket
fi
check "socket enabled (sockets.target.wants)" test -L /etc/systemd/system/sockets.target.wants/livenessd.socket
check "service not enabled (socket-activated)" test ! -e /etc/systemd/system/multi-user.target.wants/livenessd.service
if [ -d /run/systemd/system ]; then
    check "livenessd.socket is active" systemctl is-active --quiet livenessd.socket
else
    say "systemd is not running here: units installed and enabled, not started"
fi
# The main job with the installed binary and models, as the daemon's user, outside any checkout.
install -m 0755 -d "$WORK/classify"
install -m 0644 samples/astronaut.png "$WORK/classify/astronaut.png"
chmod 0755 "$WORK"
(cd / && env -u LIVENESSD_MODEL -u LIVENESSD_MINIFASNET -u LIVENESSD_DETECTOR \
    runuser -u livenessd -- livenessd classify "$WORK/classify/astronaut.png") > "$WORK/classify.txt" 2>&1 \
    || { cat "$WORK/classify.txt"; fail "livenessd classify samples/astronaut.png (as user livenessd)"; }
check "classify (as livenessd): $(cut -f2-4 "$WORK/classify.txt" | tr '\t' ' ')" \
    grep -Eq $'\tLIVE\tvit [0-9.]+ minifasnet [0-9.]+\tface ' "$WORK/classify.txt"

# An upgrade (here: the same package again, with dpkg -i) and then remove keep the operator's config
# (edited here, as an operator would).
echo "# edited by deb-tests" >> /etc/livenessd/livenessd.yaml
say "dpkg -i $(basename "$DEB") again (the upgrade path of the maintainer scripts)"
dpkg -i "$DEB" > "$WORK/reinstall.log" 2>&1 < /dev/null || { cat "$WORK/reinstall.log"; fail "dpkg -i over the installed package failed"; }
check "the upgrade keeps the edited config" grep -q '^# edited by deb-tests' /etc/livenessd/livenessd.yaml
check "the upgrade leaves no .dpkg-* copy of the config" sh -c '! ls /etc/livenessd/*.dpkg-* 2>/dev/null'
check "livenessd works after the upgrade" /usr/bin/livenessd --version
say "apt-get remove livenessd"
apt-get remove -y -q livenessd > "$WORK/remove.log" 2>&1 || { cat "$WORK/remove.log"; fail "apt-get remove failed"; }
check "remove keeps the edited config" grep -q '^# edited by deb-tests' /etc/livenessd/livenessd.yaml
check "remove takes the binary" test ! -e /usr/bin/livenessd
check "remove leaves the package in state rc" sh -c '[ "$(dpkg-query -W -f="\${db:Status-Abbrev}" livenessd | tr -d " ")" = rc ]'

say "apt-get purge livenessd"
apt-get purge -y -q livenessd > "$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log"; fail "apt-get purge failed"; }
if [ -s "$WORK/new-dependencies.txt" ]; then
    xargs apt-get purge -y -q < "$WORK/new-dependencies.txt" >> "$WORK/purge.log" 2>&1 \
        || { cat "$WORK/purge.log"; fail "apt-get purge of the dependencies it brought failed"; }
fi
check "the package is gone from dpkg's database" sh -c '! dpkg-query -W livenessd 2>/dev/null'
# Kept on purge on purpose (scripts/deb/postrm says why): the account is not a file.
getent passwd livenessd >/dev/null && say "the livenessd user and group stay (Debian practice; deluser --system livenessd removes them)"

say "file list after purging"
snapshot > "$WORK/after.txt"
# Files that tools other than this package write on their first use, whatever is installed:
# the backups that shadow's tools (adduser, useradd) keep of the account databases they edit.
# They are compared only when the machine had them before (they exist on every machine where an
# account was ever made).
not_ours='^f /etc/(passwd|group|shadow|gshadow)-$'
diff "$WORK/before.txt" "$WORK/after.txt" | grep -E '^[<>] ' | grep -Ev "^[<>] $not_ours" > "$WORK/diff.txt" || true
if [ -s "$WORK/diff.txt" ]; then
    echo "files that differ after install + purge (> left behind, < removed):" >&2
    sed 's/^/    /' "$WORK/diff.txt" >&2
    fail "apt-get purge left the file system changed ($(wc -l < "$WORK/diff.txt") paths)"
fi
say "install + purge left no file behind ($(wc -l < "$WORK/before.txt") paths compared)"
say "deb-tests: all passed"
