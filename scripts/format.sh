#!/usr/bin/env bash
# swift-format (it ships with the toolchain) over the project's Swift files, with the checked-in
# .swift-format. `scripts/format.sh` rewrites them; `scripts/format.sh --lint` only reports and fails
# on any finding (CI runs that). The generated onnx.pb.swift is left as protoc-gen-swift wrote it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift-format >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
mapfile -t files < <(git ls-files 'Sources/*.swift' 'Tests/*.swift' Package.swift | grep -v 'onnx.pb.swift$')
if [ "${1:-}" = --lint ]; then
    swift-format lint --strict --configuration .swift-format "${files[@]}"
else
    swift-format format --in-place --configuration .swift-format "${files[@]}"
fi
