#!/usr/bin/env bash
# Builds the Debian package of livenessd: dist/livenessd_<version>_<arch>.deb.
#
#   scripts/package-deb.sh [BINARY]      (default .build/release/livenessd, made by scripts/setup.sh)
#
# The binary must have the Swift runtime linked in (--static-swift-stdlib, as setup.sh builds it);
# the package's Depends: come from its shared libraries (dpkg-shlibdeps). Models come from models/
# of this checkout, else from ${LIVENESSD_TEST_ASSETS:-../shared}/models. The man page is written by
# swift-argument-parser's generate-manual from the binary's own help (built once, in release, and
# cached in ${LIVENESSD_GENERATE_MANUAL_CACHE:-/var/tmp/livenessd-generate-manual}); help2man is the
# fallback where no Swift toolchain is found. Templates and maintainer scripts: scripts/deb/.
# Environment: DEB_REVISION (default 1), SOURCE_DATE_EPOCH (default: the last commit's time),
# DEB_XZ_LEVEL (default 6).
# Needs: dpkg-dev (dpkg-shlibdeps), binutils (strip), chrpath, gzip; runs as any user
# (dpkg-deb --root-owner-group makes every file root's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BINARY="${1:-.build/release/livenessd}"
TEMPLATES="$ROOT/scripts/deb"
ASSETS="${LIVENESSD_TEST_ASSETS:-../shared}"
GM_CACHE="${LIVENESSD_GENERATE_MANUAL_CACHE:-/var/tmp/livenessd-generate-manual}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'package-deb: %s\n' "$*" >&2; exit 1; }

[ -x "$BINARY" ] || die "no executable $BINARY: run scripts/setup.sh first, or pass the binary's path"
BINARY="$(cd "$(dirname "$BINARY")" && pwd)/$(basename "$BINARY")"
for tool in dpkg-deb dpkg-shlibdeps dpkg-architecture strip chrpath gzip; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian packages: dpkg-dev binutils chrpath gzip)"
done
# A binary linked against the toolchain's Swift runtime would need /opt/swift on every terminal.
if readelf -d "$BINARY" | grep -Eq 'NEEDED.*\[lib(swiftCore|Foundation[A-Za-z]*|dispatch)\.so'; then
    die "$BINARY needs the Swift runtime's shared libraries (libswiftCore.so, ...): build it with
    swift build -c release --static-swift-stdlib   (scripts/setup.sh does)"
fi

# Models: the checkout's models/ (scripts/setup.sh), else the shared material.
MODELS=""
for candidate in models "$ASSETS/models"; do
    if [ -f "$candidate/face-liveness-vit/model.pt" ]; then MODELS="$candidate"; break; fi
done
[ -n "$MODELS" ] || die "no models: run scripts/setup.sh (models/) or set LIVENESSD_TEST_ASSETS"
for file in face-liveness-vit/model.pt face-liveness-vit/LICENSE silent-face/2.7_80x80_MiniFASNetV2.pth \
    silent-face/4_0_0_80x80_MiniFASNetV1SE.pth silent-face/LICENSE yunet/face_detection_yunet.onnx; do
    if [ ! -f "$MODELS/$file" ]; then
        # A models/ made before setup.sh copied the ViT's licence: the shared material has it.
        [ -f "$ASSETS/models/$file" ] || die "missing $MODELS/$file (run scripts/setup.sh)"
    fi
done
model_file() { if [ -f "$MODELS/$1" ]; then echo "$MODELS/$1"; else echo "$ASSETS/models/$1"; fi; }

# Version: the binary's own (`livenessd --version`), made a valid Debian upstream version
# (a leading v dropped; -rc1/-beta/... sort before the release: ~rc1; other - and _ become +),
# plus the packaging revision.
UPSTREAM="$("$BINARY" --version | head -n 1 | tr -d '[:space:]')"
UPSTREAM="$(printf '%s' "${UPSTREAM#v}" | sed -E 's/[-_.](alpha|beta|rc|pre|dev)/~\1/g; s/[-_]/+/g; s/[^A-Za-z0-9.+~]//g')"
[[ "$UPSTREAM" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "cannot make a Debian version of '$("$BINARY" --version)'"
VERSION="$UPSTREAM-${DEB_REVISION:-1}"
ARCH="$(dpkg-architecture -qDEB_HOST_ARCH)"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
COMMIT="$(cat "$(dirname "$BINARY")/livenessd.buildinfo" 2>/dev/null || git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"
say "livenessd $VERSION ($ARCH), commit $COMMIT, models from $MODELS"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/livenessd-deb.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/livenessd_${VERSION}_$ARCH"
mkdir -p "$STAGE/DEBIAN"

# 1. The binary: stripped as dh_strip does, without the $ORIGIN run path SwiftPM adds (the Swift
#    runtime is linked in; a run path in /usr/bin would be lintian's custom-library-search-path).
install -D -m 0755 "$BINARY" "$STAGE/usr/bin/livenessd"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$STAGE/usr/bin/livenessd"
chrpath -d "$STAGE/usr/bin/livenessd" >/dev/null
# livenessd reads the commit it was built from at ../share/livenessd/livenessd.buildinfo.
printf '%s\n' "$COMMIT" > "$WORK/buildinfo"
install -D -m 0644 "$WORK/buildinfo" "$STAGE/usr/share/livenessd/livenessd.buildinfo"

# 2. Models with their licences beside them (where the binary looks: /usr/share/livenessd/...).
SHARE="$STAGE/usr/share/livenessd"
install -D -m 0644 "$(model_file face-liveness-vit/model.pt)" "$SHARE/face-liveness-vit/model.pt"
install -D -m 0644 "$(model_file face-liveness-vit/LICENSE)" "$SHARE/face-liveness-vit/LICENSE"
for file in 2.7_80x80_MiniFASNetV2.pth 4_0_0_80x80_MiniFASNetV1SE.pth LICENSE; do
    install -D -m 0644 "$(model_file "silent-face/$file")" "$SHARE/silent-face/$file"
done
install -D -m 0644 "$(model_file yunet/face_detection_yunet.onnx)" "$SHARE/yunet/face_detection_yunet.onnx"
if [ -f "$MODELS/yunet/LICENSE" ]; then
    install -D -m 0644 "$MODELS/yunet/LICENSE" "$SHARE/yunet/LICENSE"
else
    install -D -m 0644 "$TEMPLATES/yunet-LICENSE" "$SHARE/yunet/LICENSE"
fi

# 3. systemd units and the default config, with the /usr/local paths of a source install made /usr.
UNITS="$STAGE/lib/systemd/system"
mkdir -p "$UNITS" "$STAGE/etc/livenessd"
for unit in livenessd.service livenessd.socket; do
    sed 's|/usr/local/|/usr/|g' "systemd/$unit" > "$UNITS/$unit"
    chmod 0644 "$UNITS/$unit"
done
sed 's|/usr/local/share/|/usr/share/|g' samples/livenessd.yaml > "$STAGE/etc/livenessd/livenessd.yaml"
chmod 0644 "$STAGE/etc/livenessd/livenessd.yaml"
if grep -n '/usr/local' "$UNITS"/* "$STAGE/etc/livenessd/livenessd.yaml"; then
    die "a /usr/local path is left in the units or the config (above)"
fi

# 4. Completions, from the binary (swift-argument-parser).
"$BINARY" --generate-completion-script bash > "$WORK/bash"
"$BINARY" --generate-completion-script zsh > "$WORK/zsh"
"$BINARY" --generate-completion-script fish > "$WORK/fish"
# A completion file is sourced, not run: no #! line (lintian: bash-completion-with-hashbang).
sed -i '1{/^#!/d}' "$WORK/bash"
install -D -m 0644 "$WORK/bash" "$STAGE/usr/share/bash-completion/completions/livenessd"
install -D -m 0644 "$WORK/zsh" "$STAGE/usr/share/zsh/vendor-completions/_livenessd"
install -D -m 0644 "$WORK/fish" "$STAGE/usr/share/fish/vendor_completions.d/livenessd.fish"

# 5. The man page, from the commands' help.
manual_date="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)"
generate_manual() { # prints the path of a generate-manual executable, or fails
    local swift="" source="" commit
    if command -v swift >/dev/null 2>&1; then swift="$(command -v swift)"
    elif [ -x /opt/swift/usr/bin/swift ]; then swift=/opt/swift/usr/bin/swift
    else return 1; fi
    # The argument parser the binary was built with (its build tree's checkout), else the mirror.
    # (BUILD/release/livenessd → BUILD/checkouts; release is a symbolic link, so no "..").
    for candidate in "${BINARY%/*/*}/checkouts/swift-argument-parser" .build/checkouts/swift-argument-parser \
        /opt/swift-packages/apple/swift-argument-parser.git; do
        if git -C "$candidate" rev-parse --verify -q 'HEAD^{commit}' >/dev/null 2>&1; then source="$candidate"; break; fi
    done
    [ -n "$source" ] || return 1
    if [ "$source" = /opt/swift-packages/apple/swift-argument-parser.git ]; then
        commit="$(git -C "$source" rev-parse -q --verify '1.8.2^{commit}')" || return 1
    else
        commit="$(git -C "$source" rev-parse 'HEAD^{commit}')"
    fi
    local tool="$GM_CACHE/generate-manual-$commit"
    if [ ! -x "$tool" ]; then
        say "building generate-manual (swift-argument-parser ${commit:0:12}, once; cached in $GM_CACHE)" >&2
        mkdir -p "$GM_CACHE"
        rm -rf "$GM_CACHE/src"
        git clone --quiet "$source" "$GM_CACHE/src" >&2 && git -C "$GM_CACHE/src" checkout --quiet "$commit" >&2 || return 1
        if ! "$swift" build --package-path "$GM_CACHE/src" -c release --product generate-manual \
            --scratch-path "$GM_CACHE/build" > "$GM_CACHE/build.log" 2>&1; then
            tail -n 30 "$GM_CACHE/build.log" >&2
            return 1
        fi
        install -m 0755 "$("$swift" build --package-path "$GM_CACHE/src" -c release --product generate-manual \
            --scratch-path "$GM_CACHE/build" --show-bin-path)/generate-manual" "$tool.part" && mv "$tool.part" "$tool"
    fi
    echo "$tool"
}
# LIVENESSD_MANPAGE=help2man skips generate-manual (the fallback, for trying it).
if [ "${LIVENESSD_MANPAGE:-}" != help2man ] && tool="$(generate_manual)"; then
    "$tool" "$BINARY" --date "$manual_date" --authors 'livenessd maintainers' --output-directory "$WORK"
    # mdoc wants .Pp, not empty lines, between paragraphs (man --warnings: "Empty input line").
    sed -i 's/^$/.Pp/' "$WORK/livenessd.1"
elif command -v help2man >/dev/null 2>&1; then
    say "man page by help2man (LIVENESSD_MANPAGE=help2man, or no Swift toolchain or argument-parser source for generate-manual)"
    help2man --no-info --section 1 --name 'face liveness (presentation-attack) detection' \
        --output "$WORK/livenessd.1" "$BINARY"
else
    die "no man page: generate-manual could not be built (Swift toolchain?) and help2man is not installed"
fi
mkdir -p "$STAGE/usr/share/man/man1"
gzip -9n < "$WORK/livenessd.1" > "$STAGE/usr/share/man/man1/livenessd.1.gz"
chmod 0644 "$STAGE/usr/share/man/man1/livenessd.1.gz"

# 6. Documentation: README (the units' Documentation= links point at README.md and PROTOCOL.md,
#    so they stay uncompressed), copyright, the Debian changelog, example clients.
DOC="$STAGE/usr/share/doc/livenessd"
install -D -m 0644 README.md "$DOC/README.md"
install -m 0644 docs/PROTOCOL.md docs/EVAL.md "$DOC/"
install -m 0644 "$TEMPLATES/copyright" "$DOC/copyright"
install -D -m 0644 samples/door_controller.py "$DOC/examples/door_controller.py"
install -m 0644 samples/watch_events.py "$DOC/examples/watch_events.py"
{
    printf 'livenessd (%s) bookworm; urgency=medium\n\n' "$VERSION"
    printf '  * Package of livenessd %s, built from commit %s.\n\n' "$UPSTREAM" "$COMMIT"
    printf ' -- livenessd maintainers <maintainers@users.noreply.r-seed-7f13dcba.example>  %s\n' \
        "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$DOC/changelog.Debian.gz"
chmod 0644 "$DOC/changelog.Debian.gz"
install -D -m 0644 "$TEMPLATES/lintian-overrides" "$STAGE/usr/share/lintian/overrides/livenessd"

# 7. Control files: Depends from the binary's shared libraries, conffiles, maintainer scripts.
mkdir -p "$WORK/shlibs/debian"
printf 'Source: livenessd\n\nPackage: livenessd\nArchitecture: any\n' > "$WORK/shlibs/debian/control"
shlibs="$(cd "$WORK/shlibs" && dpkg-shlibdeps -O --warnings=1 -e"$STAGE/usr/bin/livenessd")"
shlibs="${shlibs#shlibs:Depends=}"
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependencies"
# Packed relative relocations (DT_RELR, Package.swift) need glibc 2.36's loader; dpkg-shlibdeps does not
# see that requirement (GLIBC_ABI_DT_RELR), so it is stated here.
if readelf -d "$STAGE/usr/bin/livenessd" | grep -q '(RELR)'; then
    shlibs="$(printf '%s' "$shlibs" | sed -E 's/libc6 \(>= 2\.(3[0-5]|[12][0-9])\)/libc6 (>= 2.36)/')"
fi
# libavcodec and libavformat are opened with dlopen (Sources/CaptureKit/CFFmpegLoader), so dpkg-shlibdeps
# cannot see them: their packages' own shlibs entries (the same as a link would give) are added here.
for lib in libavcodec libavformat; do
    pkg="${lib}$(sed -n "s/^#define ${lib^^}_VERSION_MAJOR *//p" "/usr/include/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/$lib/version_major.h")"
    dep="$(dpkg-query --control-show "$pkg:$ARCH" shlibs | awk -v l="$lib" '$1 == l { $1 = ""; $2 = ""; sub(/^ +/, ""); print }')"
    [ -n "$dep" ] || die "no shlibs entry for $pkg (apt-get install $pkg)"
    shlibs="$shlibs, $dep"
done
# adduser: postinst makes the system user with it (Debian policy 9.2.1).
DEPENDS="adduser, $shlibs"
installed_size="$(du -k -s --apparent-size --exclude=DEBIAN "$STAGE" | cut -f1)"
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@INSTALLED_SIZE@|$installed_size|" \
    -e "s|@DEPENDS@|$DEPENDS|" "$TEMPLATES/control.in" > "$STAGE/DEBIAN/control"
echo /etc/livenessd/livenessd.yaml > "$STAGE/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$TEMPLATES/$script" "$STAGE/DEBIAN/$script"
done
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' | sort -z \
    | xargs -0 md5sum) > "$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/conffiles" "$STAGE/DEBIAN/md5sums"

# 8. The archive: directories 0755, files owned by root, times from SOURCE_DATE_EPOCH.
find "$STAGE" -type d -exec chmod 0755 {} +
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p dist
OUTPUT="dist/livenessd_${VERSION}_$ARCH.deb"
rm -f "$OUTPUT"
# xz at dpkg's default level 6 (about 40 s on two cores for the 75 MB binary); DEB_XZ_LEVEL=1 takes
# about 11 s for a package some 3 MB bigger.
dpkg-deb --root-owner-group -Zxz -z"${DEB_XZ_LEVEL:-6}" --build "$STAGE" "$OUTPUT" >/dev/null
say "built $OUTPUT ($(du -h "$OUTPUT" | cut -f1)); Depends: $DEPENDS"
