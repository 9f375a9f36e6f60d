#!/usr/bin/env bash
# Installs livenessd system-wide (run as root after scripts/setup.sh): binary, model, systemd units,
# default config, and the `livenessd` system user (in group `video` for the cameras).
#   PREFIX=/usr/local scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
[ -x .build/release/livenessd ] || { echo "run scripts/setup.sh first (no .build/release/livenessd)" >&2; exit 1; }
[ -f models/face-liveness-vit/model.pt ] || { echo "run scripts/setup.sh first (no model in models/)" >&2; exit 1; }
install -D -m 0755 .build/release/livenessd "$PREFIX/bin/livenessd"
[ ! -f .build/release/livenessd.buildinfo ] || install -D -m 0644 .build/release/livenessd.buildinfo "$PREFIX/share/livenessd/livenessd.buildinfo"
install -D -m 0644 models/face-liveness-vit/model.pt "$PREFIX/share/livenessd/face-liveness-vit/model.pt"
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
if [ ! -f /etc/livenessd/livenessd.yaml ]; then
    install -D -m 0644 samples/livenessd.yaml /etc/livenessd/livenessd.yaml
fi
getent group livenessd >/dev/null || groupadd --system livenessd
id livenessd >/dev/null 2>&1 || useradd --system --gid livenessd --groups video --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin livenessd
sed "s|/usr/local|$PREFIX|g" systemd/livenessd.service > /etc/systemd/system/livenessd.service
install -m 0644 systemd/livenessd.socket /etc/systemd/system/livenessd.socket
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "installed; edit /etc/livenessd/livenessd.yaml (sources:), then: systemctl enable --now livenessd.socket livenessd"
else
    echo "installed (systemd is not running here: enable the units on the target machine)"
fi
