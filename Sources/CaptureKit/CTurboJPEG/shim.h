// CTurboJPEG: libjpeg-turbo's TurboJPEG API (2.x, as Debian 12 ships) for still JPEG files in CaptureKit.
// The reference (PIL) decodes JPEG with libjpeg(-turbo), so stills use it too; FFmpeg's own decoder
// differs by a few levels per pixel.
#pragma once
#include <turbojpeg.h>
