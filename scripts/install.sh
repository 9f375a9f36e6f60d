#!/usr/bin/env bash
# Installs livenessd system-wide (run as root after scripts/setup.sh): binary, model, systemd units,
# default config, and the `livenessd` system user (in group `video` for the cameras).
#   PREFIX=/usr/local scripts/install.sh
# PREFIX (default /usr/local) is where the binary, models and docs go; the default config and the
# units are written with that prefix in their paths. For a package, see scripts/package-deb.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
PREFIX="${PREFIX%/}"
[ -x .build/release/livenessd ] || { echo "run scripts/setup.sh first (no .build/release/livenessd)" >&2; exit 1; }
[ -f models/face-liveness-vit/model.pt ] || { echo "run scripts/setup.sh first (no model in models/)" >&2; exit 1; }
install -D -m 0755 .build/release/livenessd "$PREFIX/bin/livenessd"
[ ! -f .build/release/livenessd.buildinfo ] || install -D -m 0644 .build/release/livenessd.buildinfo "$PREFIX/share/livenessd/livenessd.buildinfo"
install -D -m 0644 models/face-liveness-vit/model.pt "$PREFIX/share/livenessd/face-liveness-vit/model.pt"
[ ! -f models/face-liveness-vit/LICENSE ] || install -D -m 0644 models/face-liveness-vit/LICENSE "$PREFIX/share/livenessd/face-liveness-vit/LICENSE"
for file in 2.7_80x80_MiniFASNetV2.pth 4_0_0_80x80_MiniFASNetV1SE.pth LICENSE; do
    if [ -f "models/silent-face/$file" ]; then
        install -D -m 0644 "models/silent-face/$file" "$PREFIX/share/livenessd/silent-face/$file"
    fi
done
if [ -f models/yunet/face_detection_yunet.onnx ]; then
    install -D -m 0644 models/yunet/face_detection_yunet.onnx "$PREFIX/share/livenessd/yunet/face_detection_yunet.onnx"
fi
install -D -m 0644 README.md "$PREFIX/share/doc/livenessd/README.md"
install -D -m 0644 docs/PROTOCOL.md "$PREFIX/share/doc/livenessd/PROTOCOL.md"
install -D -m 0644 docs/EVAL.md "$PREFIX/share/doc/livenessd/EVAL.md"
# The default config names the model files where this script put them (samples/livenessd.yaml
# says /usr/local); an existing config is the operator's and stays as it is.
if [ ! -f /etc/livenessd/livenessd.yaml ]; then
    mkdir -p /etc/livenessd
    sed "s|/usr/local/|$PREFIX/|g" samples/livenessd.yaml > /etc/livenessd/livenessd.yaml
    chmod 0644 /etc/livenessd/livenessd.yaml
fi
getent group livenessd >/dev/null || groupadd --system livenessd
id livenessd >/dev/null 2>&1 || useradd --system --gid livenessd --groups video --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin livenessd
for unit in livenessd.service livenessd.socket; do
    sed "s|/usr/local/|$PREFIX/|g" "systemd/$unit" > "/etc/systemd/system/$unit"
    chmod 0644 "/etc/systemd/system/$unit"
done
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "installed; edit /etc/livenessd/livenessd.yaml (sources:), then: systemctl enable --now livenessd.socket livenessd"
else
    echo "installed (systemd is not running here: enable the units on the target machine)"
fi
