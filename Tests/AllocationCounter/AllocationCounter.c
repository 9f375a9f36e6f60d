// The test binary's malloc, calloc, realloc, free and memalign family: each forwards to glibc's
// `__libc_*` twin (no dlsym, which itself allocates) and counts when counting is on and the calling
// thread is one the test chose. Swift Testing runs suites in parallel in one process, so a global
// count would include other tests' allocations; the pipeline's work runs on its own Dispatch queues,
// which the test registers (by label pointer: libdispatch copies every label, so two queues never
// share one) from inside a locator and a sink that run on them.
#include "AllocationCounter.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define ALLOCATION_COUNTER_OFF 1
#endif
#endif
#if !defined(__GLIBC__) && !defined(ALLOCATION_COUNTER_OFF)
#define ALLOCATION_COUNTER_OFF 1
#endif

static atomic_int enabled;
static atomic_ullong counted;
static _Thread_local int threadCounts;
#define QUEUE_SLOTS 8
static const char *_Atomic queues[QUEUE_SLOTS];

// libdispatch's; NULL asks for the current queue's label (DISPATCH_CURRENT_QUEUE_LABEL).
extern const char *dispatch_queue_get_label(void *queue);

int allocation_counter_register_current_queue(void) {
    const char *label = dispatch_queue_get_label(NULL);
    if (label == NULL) return 0;
    for (int slot = 0; slot < QUEUE_SLOTS; slot++) {
        const char *expected = NULL;
        if (atomic_load(&queues[slot]) == label) return 1;
        if (atomic_compare_exchange_strong(&queues[slot], &expected, label)) return 1;
    }
    return 0;
}

void allocation_counter_clear_queues(void) {
    for (int slot = 0; slot < QUEUE_SLOTS; slot++) atomic_store(&queues[slot], NULL);
}

void allocation_counter_count_this_thread(int on) { threadCounts = on; }

void allocation_counter_enable(int on) {
    if (on) atomic_store(&counted, 0);
    atomic_store(&enabled, on);
}

uint64_t allocation_counter_count(void) { return atomic_load(&counted); }

#ifdef ALLOCATION_COUNTER_OFF

int allocation_counter_available(void) { return 0; }

#else

int allocation_counter_available(void) { return 1; }

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void __libc_free(void *pointer);
extern void *__libc_memalign(size_t alignment, size_t size);

static inline void note(void) {
    if (__builtin_expect(!atomic_load_explicit(&enabled, memory_order_relaxed), 1)) return;
    int counts = threadCounts;
    if (!counts) {
        const char *label = dispatch_queue_get_label(NULL);
        for (int slot = 0; slot < QUEUE_SLOTS && !counts; slot++) {
            const char *queue = atomic_load_explicit(&queues[slot], memory_order_relaxed);
            counts = queue != NULL && queue == label;
        }
    }
    if (counts) atomic_fetch_add_explicit(&counted, 1, memory_order_relaxed);
}

void *malloc(size_t size) {
    note();
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    note();
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    note();
    return __libc_realloc(pointer, size);
}

void free(void *pointer) { __libc_free(pointer); }

void *memalign(size_t alignment, size_t size) {
    note();
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
    note();
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
    note();
    void *pointer = __libc_memalign(alignment, size);
    if (pointer == NULL) return ENOMEM;
    *result = pointer;
    return 0;
}

#endif
