#!/usr/bin/env bash
# Makes the H.264 clips `livenessd bench decode` is quoted on: 640x480 and 1920x1080, 10 s each,
# from a sample talking-head clip in the shared assets. Output: ${1:-/tmp/livenessd-bench}/.
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS="${LIVENESSD_TEST_ASSETS:-../shared}"
OUT="${1:-/tmp/livenessd-bench}"
SOURCE="$ASSETS/samples/live/gen-facerec__short_hamilton_clip.mp4"
mkdir -p "$OUT"
for size in 640x480 1920x1080; do
    ffmpeg -v error -y -stream_loop 1 -i "$SOURCE" -t 10 -vf "scale=${size/x/:}" -c:v libx264 -preset medium \
        -crf 23 -pix_fmt yuv420p -an "$OUT/h264_$size.mp4"
done
ls -l "$OUT"
