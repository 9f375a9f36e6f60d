#!/usr/bin/env bash
# Real-camera tests: `livenessd probe` against the kernel's vivid V4L2 driver, each scenario in a
# throw-away QEMU VM ($LIVENESSD_TEST_ASSETS/tools/v4l2-vm, default ../shared). No camera and no
# kernel module loading are needed on the host.
#   capture-yuyv   YUYV 640x480 through a /dev/v4l/by-id link: 30 frames, sizes, bytes, timing, fps
#   loopback-face  a known face frame fed to vivid's output comes back byte-identical (probe --output)
#   unplug-replug  vivid's `disconnect` control while capturing: disconnected, reconnected, frames again
#   busy           a second probe on a streaming camera fails with the "is busy" message, exit 2
#   late_camera    `livenessd run --device /dev/video0` with vivid unloaded stays up and reports `waiting`;
#                  once vivid is loaded the camera is opened (`reconnected`) and decisions flow; SIGTERM exits 0;
#                  libavcodec and libavformat were never loaded (a YUYV camera needs only swscale)
#   mjpeg          a v4l2loopback MJPEG-only camera: MJPEG chosen, the broken first frame skipped, the
#                  decoded frame identical to FFmpeg's decode of the JPEG. Needs v4l2loopback built for
#                  the VM kernel: V4L2VM_MJPEG=1 builds it (apt: linux-headers-<VM kernel> make; ~15 s
#                  once, cached); without it the scenario is reported as SKIP and not counted.
# Prints PASS/FAIL per scenario, then "N passed, M failed"; exits non-zero on any failure.
# Host packages (apt): qemu-system-x86 busybox-static kmod cpio xz-utils bc v4l-utils gcc libc6-dev
# Env: CONFIGURATION=debug|release (debug), V4L2VM_CACHE (writable VM cache, /var/tmp/v4l2vm-cache),
#      VM_MEM (MiB, 1536: livenessd and its ~290 MB of shared libraries are unpacked into the guest's RAM).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
ASSETS="${LIVENESSD_TEST_ASSETS:-../shared}"
VM="$ASSETS/tools/v4l2-vm"
FACE="$VM/media/face_640x480.yuyv"
export VM_MEM="${VM_MEM:-1536}"
CONFIGURATION="${CONFIGURATION:-debug}"

for tool in qemu-system-x86_64 cpio busybox bc gcc v4l2-ctl; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool: apt-get install qemu-system-x86 busybox-static kmod cpio xz-utils bc v4l-utils gcc libc6-dev" >&2
        exit 2
    }
done
[ -x "$VM/run-in-vm.sh" ] || { echo "no VM harness at $VM: set LIVENESSD_TEST_ASSETS to the shared/ folder" >&2; exit 2; }

# Same flags as scripts/setup.sh for release, so its build is reused rather than redone.
STATIC=(); [ "$CONFIGURATION" = release ] && STATIC=(--static-swift-stdlib)
swift build -c "$CONFIGURATION" "${STATIC[@]}" --product livenessd >&2 || exit 2
BIN="$(swift build -c "$CONFIGURATION" "${STATIC[@]}" --show-bin-path)/livenessd"

T=$(mktemp -d /tmp/livenessd-v4l2vm.XXXXXX)
mkdir -p "$T/root" "$T/share" "$T/logs"
trap 'rm -rf "$T/root"' EXIT  # ~300 MB of libraries; the logs and captured frames stay
# livenessd with every library ldd lists (Swift runtime, FFmpeg, OpenBLAS, …) at their host paths.
"$VM/scripts/copy-with-libs.sh" "$T/root" "$BIN" /usr/local/bin/livenessd || exit 2
# libavcodec and libavformat are opened with dlopen (MJPEG cameras, clips), so ldd does not list them.
for lib in libavcodec.so.59 libavformat.so.59; do
    "$VM/scripts/copy-with-libs.sh" "$T/root" "/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/$lib" || exit 2
done
for program in v4l2loop v4l2feed; do gcc -O2 -static -Wall -o "$T/$program" "$VM/src/$program.c" || exit 2; done
CACHE="${V4L2VM_CACHE:-/var/tmp/v4l2vm-cache}"
has_loopback() { [ -f "$CACHE/build/base.cpio" ] && cpio -it --quiet < "$CACHE/build/base.cpio" | grep -q 'extra/v4l2loopback.ko$'; }
if [ "${V4L2VM_MJPEG:-0}" = 1 ] && ! has_loopback; then
    [ -f "$CACHE/build/base.cpio" ] || "$VM/run-in-vm.sh" -c true >/dev/null || exit 2  # kernel first
    if [ ! -f "$CACHE/build/extra/v4l2loopback.ko" ]; then W="$CACHE" "$VM/scripts/build-v4l2loopback.sh" >&2 || exit 2; fi
    W="$CACHE" "$VM/scripts/build-base.sh" >/dev/null || exit 2
fi
LOOP_PARAMS='n_devs=1 node_types=0x101 num_inputs=1 input_types=0x3 num_outputs=1 output_types=0x1'

pass=0
fail=0
# scenario NAME VM-OPTIONS… -- GUEST-SHELL-SCRIPT: runs the script in a VM; the log is $T/logs/NAME.log;
# the scenario's own checks (check_NAME) then decide.
scenario() {
    local name=$1 start rc result
    shift
    local options=()
    while [ "$1" != -- ]; do options+=("$1"); shift; done
    shift
    printf '%s\n' "$1" > "$T/$name.sh"
    start=$(date +%s.%N)
    "$VM/run-in-vm.sh" -r "$T/root" -s "$T/share" -t 120 "${options[@]}" -f "$T/$name.sh" -c "sh /test/$name.sh" \
        > "$T/logs/$name.log" 2>&1
    rc=$?
    if "check_$name" "$T/logs/$name.log" "$rc" >> "$T/logs/$name.log" 2>&1; then
        result=PASS; pass=$((pass + 1))
    else
        result=FAIL; fail=$((fail + 1))
    fi
    printf '%s %-14s %5.1fs  (log: %s)\n' "$result" "$name" "$(echo "$(date +%s.%N) - $start" | bc)" "$T/logs/$name.log"
    [ "$result" = PASS ] || sed 's/^/    | /' "$T/logs/$name.log" | tail -40
}
expect() { # description, command…
    local what=$1
    shift
    if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; return 1; fi
}
frames() { grep -c "^frame seq=[0-9]* 640x480 yuyv422 bytes=614400 pts=-\?[0-9.]* dt=" "$1"; }
fps_between() { # log, low, high: the measured rate is in [low, high]
    local fps
    fps=$(sed -n 's/^captured [0-9]* frames: \([0-9.]*\) fps measured.*/\1/p' "$1")
    echo "measured fps: ${fps:-none}"
    [ -n "$fps" ] && [ "$(echo "$fps >= $2 && $fps <= $3" | bc)" = 1 ]
}

check_capture_yuyv() {
    local log=$1 rc=$2 ok=0
    expect "probe exits 0 (got $rc)" [ "$rc" = 0 ] || ok=1
    expect "the by-id link is resolved to /dev/video0" grep -q '^device /dev/v4l/by-id/usb-vivid-webcam-video-index0 (/dev/video0): driver vivid' "$log" || ok=1
    expect "the format list has YUYV at 640x480 with intervals" \
        sh -c "grep -A400 \"'YUYV'\" '$log' | grep -A1 'Size: Discrete 640x480' | grep -q 'Interval: Discrete'" || ok=1
    expect "YUYV 640x480 at vivid's 25 fps was negotiated (30 asked)" grep -q '^capturing 30 frames: YUYV 640x480 @ 25.000 fps (1280 bytes per line, 614400 per image)' "$log" || ok=1
    expect "30 frames of 640x480 YUYV, 614400 bytes each, with timing" [ "$(frames "$log")" = 30 ] || ok=1
    expect "sequence numbers 0…29" sh -c "grep -o '^frame seq=[0-9]*' '$log' | cut -d= -f2 | tr '\n' ' ' | grep -qx '$(seq -s ' ' 0 29) '" || ok=1
    expect "a measured rate near 25 fps" fps_between "$log" 15 35 || ok=1
    expect "a size the camera does not offer: exit 2" grep -q '^800x600 probe exit status 2$' "$log" || ok=1
    expect "… and a message listing what it offers" \
        grep -q '^livenessd: /dev/video0 offers none of GREY, YUYV, NV12, MJPG, JPEG at 800x600; it offers YUYV 320x180, 640x360, 640x480, 1280x720, .*; GREY 320x180' "$log" || ok=1
    return $ok
}
check_loopback_face() {
    local log=$1 rc=$2 ok=0
    expect "probe exits 0 (got $rc)" [ "$rc" = 0 ] || ok=1
    expect "10 frames of 640x480 YUYV" [ "$(frames "$log")" = 10 ] || ok=1
    expect "the captured frame is byte-identical to the fed face frame" cmp "$T/share/loopback_last.yuyv" "$FACE" || ok=1
    return $ok
}
check_unplug_replug() {
    local log=$1 rc=$2 ok=0
    expect "probe --expect-reconnect exits 0 (got $rc)" [ "$rc" = 0 ] || ok=1
    expect "the disconnect control was set" grep -q '^disconnect control set' "$log" || ok=1
    expect "probe reported the disconnect" grep -q '^disconnected: /dev/video0 stopped answering' "$log" || ok=1
    expect "probe reported the reconnect" grep -q '^reconnected$' "$log" || ok=1
    expect "frames arrived after the reconnect" sh -c "sed -n '/^reconnected\$/,\$p' '$log' | grep -q '^frame seq='" || ok=1
    expect "60 frames in all, numbered without reuse" [ "$(frames "$log")" = 60 ] || ok=1
    expect "one reconnect counted" grep -q 'reconnects 1$' "$log" || ok=1
    return $ok
}
check_late_camera() {
    local log=$1 rc=$2 ok=0
    expect "the guest script exits 0 (got $rc)" [ "$rc" = 0 ] || ok=1
    expect "the daemon waited instead of exiting" grep -q 'camera not there: waiting for it' "$log" || ok=1
    expect "status said waiting while the camera was missing" grep -q '^status before: .*"state":"waiting"' "$log" || ok=1
    expect "vivid was loaded later" grep -q '^vivid loaded$' "$log" || ok=1
    expect "subscribers heard the camera arrive" grep -q '"kind":"reconnected".*"source":"/dev/video0"' "$log" || ok=1
    expect "decisions flowed from the late camera" grep -q '^first decision: .*"source":"/dev/video0"' "$log" || ok=1
    expect "a YUYV camera loads neither libavcodec nor libavformat" grep -q '^ffmpeg codec libraries mapped: 0$' "$log" || ok=1
    expect "SIGTERM stopped it cleanly" grep -q '^daemon exit status 0$' "$log" || ok=1
    return $ok
}
check_mjpeg() {
    local log=$1 rc=$2 ok=0
    expect "probe exits 0 (got $rc)" [ "$rc" = 0 ] || ok=1
    expect "MJPEG was chosen (no raw format offered)" grep -q '^capturing 10 frames: MJPG 640x480' "$log" || ok=1
    expect "10 decoded 640x480 frames" [ "$(grep -c '^frame seq=[0-9]* 640x480 yuvj420p bytes=460800 ' "$log")" = 10 ] || ok=1
    ffmpeg -v error -y -i "$VM/media/face_640x480.jpg" -f rawvideo -pix_fmt yuvj420p "$T/face_640x480.yuvj420p" 2>/dev/null
    expect "the decoded frame equals FFmpeg's decode of the JPEG" cmp "$T/share/mjpeg_last.yuv" "$T/face_640x480.yuvj420p" || ok=1
    return $ok
}
check_busy() {
    local log=$1 rc=$2 ok=0
    expect "the guest script exits 0 (got $rc)" [ "$rc" = 0 ] || ok=1
    expect "the second probe exits 2" grep -q '^second probe exit status 2$' "$log" || ok=1
    expect "it names the cause" grep -q '^livenessd: /dev/video0 is busy: another process holds it (see `fuser /dev/video0`)' "$log" || ok=1
    return $ok
}

# Guest scripts (busybox sh, cwd /test).
scenario capture_yuyv -- '
mkdir -p /dev/v4l/by-id && ln -s ../../video0 /dev/v4l/by-id/usb-vivid-webcam-video-index0
/usr/local/bin/livenessd probe --device /dev/v4l/by-id/usb-vivid-webcam-video-index0 --format yuyv \
    --width 640 --height 480 --frames 30
rc=$?
/usr/local/bin/livenessd probe --device /dev/video0 --width 800 --height 600 > /tmp/unsupported.log 2>&1
echo "800x600 probe exit status $?"
grep "^livenessd:" /tmp/unsupported.log
exit $rc'

scenario loopback_face -p "$LOOP_PARAMS" -f "$T/v4l2loop" -f "$FACE" -- '
/test/v4l2loop -x -I 0 -U 0 -F /test/face_640x480.yuyv -n 0 > /tmp/feeder.log 2>&1 &
feeder=$!
sleep 1; cat /tmp/feeder.log
/usr/local/bin/livenessd probe --device /dev/video0 --format yuyv --frames 10 --output /share/loopback_last.yuyv
rc=$?
kill $feeder
exit $rc'

scenario unplug_replug -- '
: > /tmp/probe.log  # exists before the first grep below
/usr/local/bin/livenessd probe --device /dev/video0 --format yuyv --frames 60 --expect-reconnect --timeout 60 \
    > /tmp/probe.log 2>&1 &
probe=$!
i=0
while [ "$(grep -c "^frame" /tmp/probe.log)" -lt 10 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
v4l2-ctl -d /dev/video0 -c disconnect=1 && echo "disconnect control set"
wait $probe
rc=$?
cat /tmp/probe.log
exit $rc'

scenario busy -- '
: > /tmp/first.log
/usr/local/bin/livenessd probe --device /dev/video0 --frames 1000 --timeout 60 > /tmp/first.log 2>&1 &
first=$!
i=0
while ! grep -q "^frame" /tmp/first.log && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
/usr/local/bin/livenessd probe --device /dev/video0 --frames 5 > /tmp/second.log 2>&1
echo "second probe exit status $?"
grep -v "^ " /tmp/second.log | grep -v "^ioctl"
kill $first'

# Under TCG a model forward pass takes seconds (the pair: 3.4 s a frame with SSE kernels, 28 s with
# emulated AVX2; the ViT about 50 s), so the daemon detects faces (YuNet, a few seconds a frame): vivid's
# test pattern has no face, and `no_face` decisions flow without any batch of model work in the way.
mkdir -p "$T/share/silent-face" && cp "$ASSETS"/models/silent-face/*.pth "$T/share/silent-face/" || exit 2
cp "$ASSETS/models/yunet/face_detection_yunet.onnx" "$T/share/" || exit 2
scenario late_camera -- '
rmmod vivid || { echo "cannot unload vivid"; exit 1; }
: > /tmp/daemon.log
OPENBLAS_CORETYPE=Prescott /usr/local/bin/livenessd run --device /dev/video0 --models minifasnet \
    --minifasnet /share/silent-face --crop detect --detector /share/face_detection_yunet.onnx \
    --socket /tmp/late.sock > /tmp/daemon.log 2>&1 &
daemon=$!
i=0
while [ ! -S /tmp/late.sock ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i + 1)); done
sleep 1
echo "status before: $(/usr/local/bin/livenessd watch --socket /tmp/late.sock --status 2>&1)"
: > /tmp/events.log
/usr/local/bin/livenessd watch --socket /tmp/late.sock > /tmp/events.log 2>&1 &
watcher=$!
sleep 1
insmod "$(grep "/vivid.ko\$" /modules.list)" $(cat /test/vivid.params) && echo "vivid loaded"
i=0
while ! grep -q "\"type\":\"decision\"" /tmp/events.log && [ $i -lt 500 ]; do sleep 0.1; i=$((i + 1)); done
grep "\"type\":\"source\"" /tmp/events.log
echo "first decision: $(grep -m1 "\"type\":\"decision\"" /tmp/events.log)"
echo "ffmpeg codec libraries mapped: $(grep -c -E "libav(codec|format)" /proc/$daemon/maps)"
echo "daemon $(grep VmHWM /proc/$daemon/status)"
kill -TERM $daemon
wait $daemon
echo "daemon exit status $?"
kill $watcher 2>/dev/null
echo "--- daemon log"
cat /tmp/daemon.log'

if has_loopback; then
    scenario mjpeg -f "$T/v4l2feed" -f "$VM/media/face_640x480.jpg" -- '
insmod /lib/modules/extra/v4l2loopback.ko devices=1 video_nr=10 card_label=FakeMJPEGCam exclusive_caps=1 || exit 1
/test/v4l2feed -d /dev/video10 -f MJPG -w 640 -h 480 -r 30 /test/face_640x480.jpg > /tmp/feeder.log 2>&1 &
feeder=$!
sleep 1
/usr/local/bin/livenessd probe --device /dev/video10 --frames 10 --output /share/mjpeg_last.yuv
rc=$?
kill $feeder
exit $rc'
else
    echo "SKIP mjpeg          (v4l2loopback not in the VM image: run with V4L2VM_MJPEG=1 to build it)"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
