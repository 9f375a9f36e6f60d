#ifndef LIVENESSD_ALLOCATION_COUNTER_H
#define LIVENESSD_ALLOCATION_COUNTER_H

#include <stdint.h>

/// Counts heap allocations (malloc, calloc, realloc, the memalign family) made on chosen threads:
/// those whose current Dispatch queue was registered, and the threads that called
/// `allocation_counter_count_this_thread(1)`. Tests only: the test binary's own malloc & co. wrap
/// glibc's `__libc_*` entry points. 0 from `allocation_counter_available` when it cannot count
/// (a sanitizer owns malloc, or not glibc): tests then skip.
int allocation_counter_available(void);

/// Starts counting from zero (1) or stops (0).
void allocation_counter_enable(int enabled);

/// Allocations counted since the last `allocation_counter_enable(1)`.
uint64_t allocation_counter_count(void);

/// Counts the calling thread's allocations (1) or stops (0), whatever queue it runs.
void allocation_counter_count_this_thread(int enabled);

/// Counts allocations made while the Dispatch queue the caller runs on is current (on any thread).
/// At most 8 queues; returns 0 when full or not on a queue.
int allocation_counter_register_current_queue(void);

/// Forgets every registered queue.
void allocation_counter_clear_queues(void);

#endif
