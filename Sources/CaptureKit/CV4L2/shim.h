// CV4L2: the Linux V4L2 kernel interface for CaptureKit's V4L2Camera.
// Raw ioctls, not libv4l2: the formats we stream (GREY, YUYV, NV12, MJPEG) are what UVC webcams
// offer natively, so libv4l2's software conversions would only add a dependency and hide what
// the driver really negotiated (libv4l2 also fakes formats such as RGB24 by converting on the CPU).
// Only what Swift cannot import is defined here: the VIDIOC_* request codes and V4L2_PIX_FMT_*
// codes are function-like macros (_IOWR, v4l2_fourcc) and ioctl(2) is variadic.
#pragma once
#include <linux/videodev2.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

static inline int cv4l2_ioctl(int fd, unsigned long request, void *argument) { return ioctl(fd, request, argument); }

static inline unsigned long cv4l2_vidioc_querycap(void) { return VIDIOC_QUERYCAP; }
static inline unsigned long cv4l2_vidioc_enum_fmt(void) { return VIDIOC_ENUM_FMT; }
static inline unsigned long cv4l2_vidioc_enum_framesizes(void) { return VIDIOC_ENUM_FRAMESIZES; }
static inline unsigned long cv4l2_vidioc_enum_frameintervals(void) { return VIDIOC_ENUM_FRAMEINTERVALS; }
static inline unsigned long cv4l2_vidioc_s_fmt(void) { return VIDIOC_S_FMT; }
static inline unsigned long cv4l2_vidioc_g_parm(void) { return VIDIOC_G_PARM; }
static inline unsigned long cv4l2_vidioc_s_parm(void) { return VIDIOC_S_PARM; }
static inline unsigned long cv4l2_vidioc_reqbufs(void) { return VIDIOC_REQBUFS; }
static inline unsigned long cv4l2_vidioc_querybuf(void) { return VIDIOC_QUERYBUF; }
static inline unsigned long cv4l2_vidioc_qbuf(void) { return VIDIOC_QBUF; }
static inline unsigned long cv4l2_vidioc_dqbuf(void) { return VIDIOC_DQBUF; }
static inline unsigned long cv4l2_vidioc_streamon(void) { return VIDIOC_STREAMON; }
static inline unsigned long cv4l2_vidioc_streamoff(void) { return VIDIOC_STREAMOFF; }

static inline __u32 cv4l2_pix_fmt_grey(void) { return V4L2_PIX_FMT_GREY; }
static inline __u32 cv4l2_pix_fmt_yuyv(void) { return V4L2_PIX_FMT_YUYV; }
static inline __u32 cv4l2_pix_fmt_nv12(void) { return V4L2_PIX_FMT_NV12; }
static inline __u32 cv4l2_pix_fmt_mjpeg(void) { return V4L2_PIX_FMT_MJPEG; }
static inline __u32 cv4l2_pix_fmt_jpeg(void) { return V4L2_PIX_FMT_JPEG; }
