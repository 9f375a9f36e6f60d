// CFFmpegLoader: libavcodec and libavformat, opened with dlopen the first time a source needs them.
//
// Why by hand: Debian's libavcodec59 and libavformat59 bring 109 further libraries (x265, rav1e,
// librsvg, glib, gnutls, libopenmpt, Samba's …) that the loader maps and relocates at every start:
// 20.6 MB of resident memory in a program that only links them (docs/ARCHITECTURE.md, "Memory"),
// whether or not it ever opens a clip. A door terminal's YUYV camera needs neither library (swscale
// and libavutil, linked as usual, convert its frames); an MJPEG camera needs libavcodec alone. ELF
// linkers have no deferred DT_NEEDED on Linux (Solaris' -z lazyload), so the few functions
// CaptureKit calls are resolved here with dlsym, typed by the installed headers' own declarations.
#pragma once
#include <stddef.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

/// Opens libavcodec (once; thread-safe). 0 on success, else -1 with the reason in `message`.
int lv_ffmpeg_load_codecs(char *message, size_t size);
/// Opens libavformat and libavcodec (once; thread-safe). 0 on success, else -1 with the reason.
int lv_ffmpeg_load_formats(char *message, size_t size);

// libavcodec: call only after lv_ffmpeg_load_codecs (or _formats) succeeded.
const AVCodec *lv_avcodec_find_decoder(enum AVCodecID id);
const AVCodec *lv_avcodec_find_encoder(enum AVCodecID id);
AVCodecContext *lv_avcodec_alloc_context3(const AVCodec *codec);
void lv_avcodec_free_context(AVCodecContext **context);
int lv_avcodec_parameters_to_context(AVCodecContext *codec, const AVCodecParameters *parameters);
int lv_avcodec_open2(AVCodecContext *context, const AVCodec *codec, AVDictionary **options);
int lv_avcodec_send_packet(AVCodecContext *context, const AVPacket *packet);
int lv_avcodec_receive_frame(AVCodecContext *context, AVFrame *frame);
int lv_avcodec_send_frame(AVCodecContext *context, const AVFrame *frame);
int lv_avcodec_receive_packet(AVCodecContext *context, AVPacket *packet);
AVPacket *lv_av_packet_alloc(void);
void lv_av_packet_free(AVPacket **packet);
void lv_av_packet_unref(AVPacket *packet);

// libavformat: call only after lv_ffmpeg_load_formats succeeded.
int lv_avformat_network_init(void);
AVFormatContext *lv_avformat_alloc_context(void);
int lv_avformat_open_input(AVFormatContext **context, const char *url, const AVInputFormat *format, AVDictionary **options);
int lv_avformat_find_stream_info(AVFormatContext *context, AVDictionary **options);
void lv_avformat_close_input(AVFormatContext **context);
int lv_av_find_best_stream(AVFormatContext *context, enum AVMediaType type, int wanted, int related,
                           const AVCodec **decoder, int flags);
int lv_av_read_frame(AVFormatContext *context, AVPacket *packet);
int lv_avio_feof(AVIOContext *context);
uint8_t *lv_av_stream_get_side_data(const AVStream *stream, enum AVPacketSideDataType type, size_t *size);
