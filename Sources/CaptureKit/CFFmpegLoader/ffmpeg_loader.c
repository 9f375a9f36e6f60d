// See include/ffmpeg_loader.h for why these two libraries are opened at run time.
#include "ffmpeg_loader.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

// The sonames the headers were built for: a mismatch is an ABI break, never loaded by accident.
#define LV_STRING2(x) #x
#define LV_STRING(x) LV_STRING2(x)
#define AVCODEC_SONAME "libavcodec.so." LV_STRING(LIBAVCODEC_VERSION_MAJOR)
#define AVFORMAT_SONAME "libavformat.so." LV_STRING(LIBAVFORMAT_VERSION_MAJOR)

#define AVCODEC_FUNCTIONS(X)                                                                               \
    X(avcodec_find_decoder)                                                                                \
    X(avcodec_find_encoder)                                                                                \
    X(avcodec_alloc_context3)                                                                              \
    X(avcodec_free_context)                                                                                \
    X(avcodec_parameters_to_context)                                                                       \
    X(avcodec_open2)                                                                                       \
    X(avcodec_send_packet)                                                                                 \
    X(avcodec_receive_frame)                                                                               \
    X(avcodec_send_frame)                                                                                  \
    X(avcodec_receive_packet)                                                                              \
    X(av_packet_alloc)                                                                                     \
    X(av_packet_free)                                                                                      \
    X(av_packet_unref)

#define AVFORMAT_FUNCTIONS(X)                                                                              \
    X(avformat_network_init)                                                                               \
    X(avformat_alloc_context)                                                                              \
    X(avformat_open_input)                                                                                 \
    X(avformat_find_stream_info)                                                                           \
    X(avformat_close_input)                                                                                \
    X(av_find_best_stream)                                                                                 \
    X(av_read_frame)                                                                                       \
    X(avio_feof)                                                                                           \
    X(av_stream_get_side_data)

// Each pointer has the type of the header's own declaration, so a signature that drifts does not compile.
#define DECLARE_POINTER(name) static __typeof__(name) *p_##name;
AVCODEC_FUNCTIONS(DECLARE_POINTER)
AVFORMAT_FUNCTIONS(DECLARE_POINTER)

struct library {
    pthread_once_t once;
    int loaded;
    char error[512];
};
static struct library codecs = {PTHREAD_ONCE_INIT, 0, ""};
static struct library formats = {PTHREAD_ONCE_INIT, 0, ""};

static void *open_library(struct library *library, const char *soname, const char *package) {
    void *handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        const char *reason = dlerror();
        snprintf(library->error, sizeof library->error, "cannot load FFmpeg's %s (%s); install it: apt-get install %s",
                 soname, reason ? reason : "unknown error", package);
    }
    return handle;
}

#define RESOLVE(name)                                                                                      \
    if ((p_##name = (__typeof__(name) *)dlsym(handle, #name)) == NULL) {                                   \
        snprintf(library->error, sizeof library->error, "%s has no function %s: a different FFmpeg build", \
                 soname, #name);                                                                           \
        return;                                                                                            \
    }

static void load_codecs(void) {
    struct library *library = &codecs;
    const char *soname = AVCODEC_SONAME;
    void *handle = open_library(library, soname, "libavcodec" LV_STRING(LIBAVCODEC_VERSION_MAJOR));
    if (handle == NULL) return;
    AVCODEC_FUNCTIONS(RESOLVE)
    library->loaded = 1;
}

static void load_formats(void) {
    struct library *library = &formats;
    const char *soname = AVFORMAT_SONAME;
    // libavformat's own calls into libavcodec bind to the same copy of libavcodec as ours.
    if (lv_ffmpeg_load_codecs(library->error, sizeof library->error) != 0) return;
    void *handle = open_library(library, soname, "libavformat" LV_STRING(LIBAVFORMAT_VERSION_MAJOR));
    if (handle == NULL) return;
    AVFORMAT_FUNCTIONS(RESOLVE)
    library->loaded = 1;
}

static int finish(struct library *library, char *message, size_t size) {
    if (__atomic_load_n(&library->loaded, __ATOMIC_ACQUIRE)) return 0;
    if (message != NULL && size > 0) snprintf(message, size, "%s", library->error);
    return -1;
}

int lv_ffmpeg_load_codecs(char *message, size_t size) {
    pthread_once(&codecs.once, load_codecs);
    return finish(&codecs, message, size);
}

int lv_ffmpeg_load_formats(char *message, size_t size) {
    pthread_once(&formats.once, load_formats);
    return finish(&formats, message, size);
}

const AVCodec *lv_avcodec_find_decoder(enum AVCodecID id) { return p_avcodec_find_decoder(id); }
const AVCodec *lv_avcodec_find_encoder(enum AVCodecID id) { return p_avcodec_find_encoder(id); }
AVCodecContext *lv_avcodec_alloc_context3(const AVCodec *codec) { return p_avcodec_alloc_context3(codec); }
void lv_avcodec_free_context(AVCodecContext **context) { p_avcodec_free_context(context); }
int lv_avcodec_parameters_to_context(AVCodecContext *codec, const AVCodecParameters *parameters) {
    return p_avcodec_parameters_to_context(codec, parameters);
}
int lv_avcodec_open2(AVCodecContext *context, const AVCodec *codec, AVDictionary **options) {
    return p_avcodec_open2(context, codec, options);
}
int lv_avcodec_send_packet(AVCodecContext *context, const AVPacket *packet) {
    return p_avcodec_send_packet(context, packet);
}
int lv_avcodec_receive_frame(AVCodecContext *context, AVFrame *frame) { return p_avcodec_receive_frame(context, frame); }
int lv_avcodec_send_frame(AVCodecContext *context, const AVFrame *frame) { return p_avcodec_send_frame(context, frame); }
int lv_avcodec_receive_packet(AVCodecContext *context, AVPacket *packet) {
    return p_avcodec_receive_packet(context, packet);
}
AVPacket *lv_av_packet_alloc(void) { return p_av_packet_alloc(); }
void lv_av_packet_free(AVPacket **packet) { p_av_packet_free(packet); }
void lv_av_packet_unref(AVPacket *packet) { p_av_packet_unref(packet); }

int lv_avformat_network_init(void) { return p_avformat_network_init(); }
AVFormatContext *lv_avformat_alloc_context(void) { return p_avformat_alloc_context(); }
int lv_avformat_open_input(AVFormatContext **context, const char *url, const AVInputFormat *format,
                           AVDictionary **options) {
    return p_avformat_open_input(context, url, format, options);
}
int lv_avformat_find_stream_info(AVFormatContext *context, AVDictionary **options) {
    return p_avformat_find_stream_info(context, options);
}
void lv_avformat_close_input(AVFormatContext **context) { p_avformat_close_input(context); }
int lv_av_find_best_stream(AVFormatContext *context, enum AVMediaType type, int wanted, int related,
                           const AVCodec **decoder, int flags) {
    return p_av_find_best_stream(context, type, wanted, related, decoder, flags);
}
int lv_av_read_frame(AVFormatContext *context, AVPacket *packet) { return p_av_read_frame(context, packet); }
int lv_avio_feof(AVIOContext *context) { return p_avio_feof(context); }
uint8_t *lv_av_stream_get_side_data(const AVStream *stream, enum AVPacketSideDataType type, size_t *size) {
    return p_av_stream_get_side_data(stream, type, size);
}
