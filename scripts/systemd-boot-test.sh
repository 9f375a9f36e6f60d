#!/usr/bin/env bash
# A real systemd boot test: boots a minimal Debian 12 (systemd, udev, the kernel's vivid camera) in QEMU,
# installs livenessd's .deb there and checks what only a real init system shows:
#   * the .deb installs; livenessd.socket is listening and livenessd.service is not running
#   * the first client connection starts the service (socket activation), which becomes active only
#     after READY=1 (Type=notify), and decisions flow from the vivid camera (/dev/video0, group video)
#   * a daemon whose frames stop (SIGSTOP) is killed by systemd's watchdog and restarted; frames come back
#   * `systemctl restart livenessd` keeps the socket file: clients connect and get events after it
#   * `systemctl reload` (SIGHUP) reaches the daemon; nothing about livenessd was logged at priority err
#   * a fatal configuration error fails the service and `journalctl -p err -u livenessd` shows the line;
#     with the config fixed, the next client starts it again
# usage: scripts/systemd-boot-test.sh [LIVENESSD.deb]
#   Without an argument: $LIVENESSD_DEB, else scripts/package-deb.sh makes dist/livenessd_*.deb from
#   .build/release/livenessd (scripts/setup.sh's build). LIVENESSD_BOOT_STANDIN=BINARY installs that binary, the units and the models by hand
#   (as scripts/install.sh with PREFIX=/usr) instead of a .deb.
# The guest image (debootstrap, ~1-3 min) is made once and cached in $LIVENESSD_BOOT_CACHE
# (/var/tmp/livenessd-boot-cache) under a hash of its inputs (scripts/systemd-boot/{packages.txt,init,
# livenessd-boot-test.service}, this script's IMAGE_VERSION, the mirror, the kernel); each run boots a
# qcow2 overlay of it, so the cached image stays clean. The kernel and its modules come from the
# v4l2-vm harness's cache ($V4L2VM_CACHE, made by $LIVENESSD_TEST_ASSETS/tools/v4l2-vm/scripts/build-base.sh).
# Host packages (apt): debootstrap e2fsprogs qemu-utils qemu-system-x86 busybox-static kmod cpio xz-utils
# Env: LIVENESSD_BOOT_TIMEOUT (VM wall-clock limit, s, default 600), LIVENESSD_BOOT_MIRROR
#      (default http://deb.debian.org/debian), VM_MEM (MiB, 1024), VM_SMP (vCPUs, 2: multi-threaded TCG, ~25 % faster on 2 cores),
#      LIVENESSD_BOOT_KEEP=1 (keep the run dir).
# Exit: 0 all checks passed; 1 a check failed; 2 setup failed; 124 the VM timed out.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
HERE="$ROOT/scripts/systemd-boot"
IMAGE_VERSION=1   # bump when the image recipe below changes
ASSETS="${LIVENESSD_TEST_ASSETS:-$ROOT/../shared}"
VM="$ASSETS/tools/v4l2-vm"
MODELS="${LIVENESSD_BOOT_MODELS:-$ASSETS/models}"
CACHE="${LIVENESSD_BOOT_CACHE:-/var/tmp/livenessd-boot-cache}"
V4L2VM_CACHE="${V4L2VM_CACHE:-/var/tmp/v4l2vm-cache}"
MIRROR="${LIVENESSD_BOOT_MIRROR:-http://deb.debian.org/debian}"
TMO="${LIVENESSD_BOOT_TIMEOUT:-600}"
START=$(date +%s)

say() { printf '[boot-test %4ss] %s\n' "$(($(date +%s) - START))" "$*"; }
die() { echo "systemd-boot-test: $*" >&2; exit 2; }

for tool in debootstrap mkfs.ext4 qemu-img qemu-system-x86_64 busybox cpio modprobe depmod xz sha256sum; do
    command -v "$tool" >/dev/null || die "missing $tool: apt-get install debootstrap e2fsprogs qemu-utils qemu-system-x86 busybox-static kmod cpio xz-utils"
done
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, and an image whose files belong to root)"

# --- what to install --------------------------------------------------------------------------------
DEB=""; STANDIN="${LIVENESSD_BOOT_STANDIN:-}"
if [ -z "$STANDIN" ]; then
    DEB="${1:-${LIVENESSD_DEB:-}}"
    if [ -z "$DEB" ]; then
        # This checkout's package, made now (an older dist/*.deb may be of another commit).
        [ -x scripts/package-deb.sh ] || die "no .deb given and no scripts/package-deb.sh to make one"
        say "making the .deb (scripts/package-deb.sh)"
        scripts/package-deb.sh >&2 || die "scripts/package-deb.sh failed"
        DEB=$(ls -t dist/livenessd_*.deb 2>/dev/null | head -1)
    fi
    [ -f "$DEB" ] || die "no such .deb: $DEB"
    DEB=$(readlink -f "$DEB")
else
    [ -x "$STANDIN" ] || die "LIVENESSD_BOOT_STANDIN: no executable $STANDIN"
    for f in face-liveness-vit/model.pt silent-face/2.7_80x80_MiniFASNetV2.pth yunet/face_detection_yunet.onnx; do
        [ -f "$MODELS/$f" ] || die "no $MODELS/$f (set LIVENESSD_TEST_ASSETS or LIVENESSD_BOOT_MODELS)"
    done
fi

# --- kernel and modules (shared with the v4l2-vm harness) -------------------------------------------
if [ ! -f "$V4L2VM_CACHE/build/vmlinux" ] || ! ls -d "$V4L2VM_CACHE"/kernel/lib/modules/*/ >/dev/null 2>&1; then
    [ -x "$VM/scripts/build-base.sh" ] || die "no v4l2-vm harness at $VM (set LIVENESSD_TEST_ASSETS)"
    say "fetching the kernel (v4l2-vm harness)"
    W="$V4L2VM_CACHE" "$VM/scripts/build-base.sh" >&2 || die "the v4l2-vm kernel build failed"
fi
KMODS=$(ls -d "$V4L2VM_CACHE"/kernel/lib/modules/*/ | head -1); KMODS=${KMODS%/}
KV=$(basename "$KMODS")
KERNEL="$V4L2VM_CACHE/build/vmlinux"

# --- the cached guest image -------------------------------------------------------------------------
DEBOOTSTRAP_OPTS=(--variant=minbase --arch=amd64 --components=main)
PACKAGES=$(grep -v '^#' "$HERE/packages.txt" | grep -v '^$' | tr '\n' ',' | sed 's/,$//')
KEY=$( { echo "image $IMAGE_VERSION"; echo "debootstrap ${DEBOOTSTRAP_OPTS[*]} bookworm $MIRROR";
         echo "kernel $KV"; cat "$HERE/packages.txt" "$HERE/init" "$HERE/livenessd-boot-test.service";
         sed -n '/^build_image() {/,/^}/p' "$0"; } | sha256sum | cut -c1-16)
IMG="$CACHE/image-$KEY"

build_image() {
    local work="$CACHE/building-$KEY" rootfs ko rel size
    rm -rf "$work"; mkdir -p "$work"
    rootfs="$work/rootfs"
    say "debootstrap bookworm (${DEBOOTSTRAP_OPTS[*]}) with: $PACKAGES"
    debootstrap "${DEBOOTSTRAP_OPTS[@]}" --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" \
        > "$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; return 1; }
    # Small: no apt lists or caches, docs, man pages, locales (dpkg would not install them again either).
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    cat > "$rootfs/etc/dpkg/dpkg.cfg.d/01-boot-test-small" <<'CFG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/livenessd/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/locale/*
CFG
    echo boottest > "$rootfs/etc/hostname"
    echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$rootfs/etc/fstab"
    : > "$rootfs/etc/machine-id"
    # The camera: vivid as a webcam only (/dev/video0 capture, /dev/video1 output), loaded the ordinary
    # way (systemd-modules-load) from the image's /lib/modules; udev gives the nodes to group video.
    echo vivid > "$rootfs/etc/modules-load.d/vivid.conf"
    echo "options vivid n_devs=1 node_types=0x101" > "$rootfs/etc/modprobe.d/vivid.conf"
    for mod in vivid 9pnet_virtio 9p virtio_pci virtio_blk ext4 autofs4; do
        modprobe --show-depends -d "$V4L2VM_CACHE/kernel" -S "$KV" $mod | awk '$1=="insmod"{print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        rel=${ko#"$KMODS"/}
        install -D -m 0644 "$ko" "$rootfs/lib/modules/$KV/$rel"
    done
    cp "$KMODS"/modules.order "$KMODS"/modules.builtin* "$rootfs/lib/modules/$KV/" 2>/dev/null
    depmod -b "$rootfs" "$KV" || return 1
    # Quiet, quick boot: no login prompt on the console, no timers.
    for unit in serial-getty@ttyS0.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer \
        e2scrub_all.timer e2scrub_reap.service fstrim.timer dpkg-db-backup.timer systemd-timesyncd.service; do
        ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
    done
    install -m 0644 "$HERE/livenessd-boot-test.service" "$rootfs/etc/systemd/system/"
    mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
    ln -sf ../livenessd-boot-test.service "$rootfs/etc/systemd/system/multi-user.target.wants/"
    # Room for the .deb and the journal.
    size=$(( $(du -sm "$rootfs" | cut -f1) + 400 ))
    mkfs.ext4 -q -F -L boottest -d "$rootfs" "$work/rootfs.img" "${size}M" > /dev/null || return 1
    # The initramfs: busybox and the root disk's modules.
    local initrd="$work/initrd" 
    mkdir -p "$initrd/bin"
    cp /bin/busybox "$initrd/bin/busybox"
    install -m 0755 "$HERE/init" "$initrd/init"
    : > "$initrd/modules.list"
    for mod in virtio_pci virtio_blk ext4; do
        modprobe --show-depends -d "$V4L2VM_CACHE/kernel" -S "$KV" $mod | awk '$1=="insmod"{print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        cp "$ko" "$initrd/$(basename "$ko")"; echo "/$(basename "$ko")" >> "$initrd/modules.list"
    done
    (cd "$initrd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$work/initrd.cpio" || return 1
    rm -rf "$rootfs" "$initrd"
    mv "$work" "$IMG"
}

mkdir -p "$CACHE" || die "cannot create $CACHE"
if [ ! -f "$IMG/rootfs.img" ]; then
    exec 9> "$CACHE/.lock"; flock 9
    if [ ! -f "$IMG/rootfs.img" ]; then
        t0=$(date +%s)
        build_image || die "building the guest image failed (log: $CACHE/building-$KEY/debootstrap.log)"
        say "image built in $(($(date +%s) - t0))s: $IMG ($(du -sh --apparent-size "$IMG/rootfs.img" | cut -f1))"
        # Older images (other keys) are of no further use.
        find "$CACHE" -maxdepth 1 -name 'image-*' ! -name "image-$KEY" -exec rm -rf {} +
    fi
    exec 9>&-
else
    say "cached image $IMG"
fi

# --- this run ---------------------------------------------------------------------------------------
RUN=$(mktemp -d /tmp/livenessd-boot.XXXXXX)
[ "${LIVENESSD_BOOT_KEEP:-0}" = 1 ] || trap 'rm -rf "$RUN"' EXIT
SHARE="$RUN/share"; mkdir -p "$SHARE"
cp "$HERE/guest.sh" "$SHARE/guest.sh"
if [ -n "$DEB" ]; then
    cp "$DEB" "$SHARE/livenessd.deb"
    say "installing $(dpkg-deb -f "$DEB" Package)_$(dpkg-deb -f "$DEB" Version) from $DEB"
else
    # The stand-in: scripts/install.sh's layout with PREFIX=/usr, as a tree the guest copies over /.
    S="$SHARE/standin"
    install -D -m 0755 "$STANDIN" "$S/usr/bin/livenessd"
    # A binary built without --static-swift-stdlib needs the toolchain's Swift runtime (at its path).
    ldd "$STANDIN" | awk '$3 ~ /^\/opt\/swift\// {print $3}' | while read -r lib; do
        install -D -m 0644 "$lib" "$S$lib"
    done
    install -D -m 0644 "$MODELS/face-liveness-vit/model.pt" "$S/usr/share/livenessd/face-liveness-vit/model.pt"
    for f in 2.7_80x80_MiniFASNetV2.pth 4_0_0_80x80_MiniFASNetV1SE.pth; do
        install -D -m 0644 "$MODELS/silent-face/$f" "$S/usr/share/livenessd/silent-face/$f"
    done
    install -D -m 0644 "$MODELS/yunet/face_detection_yunet.onnx" "$S/usr/share/livenessd/yunet/face_detection_yunet.onnx"
    install -D -m 0644 samples/livenessd.yaml "$S/etc/livenessd/livenessd.yaml"
    mkdir -p "$S/usr/lib/systemd/system"
    sed "s|/usr/local|/usr|g" systemd/livenessd.service > "$S/usr/lib/systemd/system/livenessd.service"
    sed "s|/usr/local|/usr|g" systemd/livenessd.socket > "$S/usr/lib/systemd/system/livenessd.socket"
    say "installing the stand-in (binary $STANDIN, units from systemd/, models from $MODELS)"
fi
qemu-img create -q -f qcow2 -b "$IMG/rootfs.img" -F raw "$RUN/disk.qcow2" || die "qemu-img failed"

# TCG (no KVM here), two vCPUs (MTTCG: one host thread each). -cpu Nehalem: x86-64-v2 without AVX.
# QEMU's TCG emulates AVX2 (-cpu max) about
# 8x slower than SSE for the models' GEMMs, and OpenBLAS and the daemon pick their AVX2 kernels from
# CPUID; on Nehalem they take the SSE ones (and the daemon logs that as a warning, not an error).
say "booting (TCG, timeout ${TMO}s, console: $RUN/console.log)"
t0=$(date +%s.%N)
timeout --foreground -k 5 "$TMO" qemu-system-x86_64 -accel tcg -cpu Nehalem -M pc -m "${VM_MEM:-1024}" -smp "${VM_SMP:-2}" \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -drive "file=$RUN/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -fsdev "local,id=sh0,path=$SHARE,security_model=none" -device "virtio-9p-pci,fsdev=sh0,mount_tag=boottest" \
    -kernel "$KERNEL" -initrd "$IMG/initrd.cpio" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3 mitigations=off nokaslr tsc=reliable systemd.show_status=error" \
    < /dev/null 2>&1 | stdbuf -oL tr -d '\r' > "$RUN/console.log"
qrc=${PIPESTATUS[0]}
vm_s=$(echo "$(date +%s.%N) - $t0" | bc)
rm -rf "$CACHE/last-run"; mkdir -p "$CACHE/last-run"; cp "$RUN/console.log" "$CACHE/last-run/console.log"
cp "$SHARE"/*.log "$SHARE"/*.txt "$CACHE/last-run/" 2>/dev/null

# --- verdict ----------------------------------------------------------------------------------------
grep -a '^@@' "$SHARE/results.log" 2>/dev/null | sed 's/^@@//'
pass=$(grep -ac '^@@PASS' "$SHARE/results.log" 2>/dev/null); fail=$(grep -ac '^@@FAIL' "$SHARE/results.log" 2>/dev/null)
printf 'VM %.0fs (qemu rc %s), whole test %ss; logs: %s/last-run/\n' "$vm_s" "$qrc" "$(($(date +%s) - START))" "$CACHE"
if [ "$qrc" = 124 ]; then
    echo "systemd-boot-test: FAILED: the VM did not power off within ${TMO}s; console tail:"; tail -40 "$RUN/console.log"; exit 124
fi
if ! grep -aq '^@@DONE' "$SHARE/results.log" 2>/dev/null; then
    echo "systemd-boot-test: FAILED: the guest checks did not finish (qemu rc $qrc); console tail:"; tail -40 "$RUN/console.log"; exit 1
fi
if [ "${fail:-0}" != 0 ] || [ "${pass:-0}" = 0 ]; then
    echo "systemd-boot-test: FAILED: ${fail:-0} of $((pass + fail)) checks failed; the guest's journal: $CACHE/last-run/journal.txt"
    exit 1
fi
echo "systemd-boot-test: all $pass checks passed"
