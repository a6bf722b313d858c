/* The cache of large output buffers: see include/fastce/buffer_cache.h for what and why. */
#include "fastce/buffer_cache.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define HAVE_MMAP 1
#endif

/* Each block: [header | data]; the header keeps the data's capacity. 64 bytes keep the data
   cache-line aligned. Large blocks are mapped from the OS directly (not through malloc, whose
   heap could keep them after free) and start on a 2 MiB boundary so that they can be backed by
   transparent huge pages: fewer, cheaper page faults on first touch, as NumPy's own allocator
   asks for. */
#define HEADER 64
#define HUGE_ALIGN ((size_t)2 << 20)

typedef struct { size_t cap; } block_header;

typedef struct { void *base; size_t cap; } slot_t;

static atomic_flag lock_flag = ATOMIC_FLAG_INIT;
static slot_t slots[FASTCE_CACHE_SLOTS + 1]; /* oldest first; one spare while inserting */
static size_t n_slots, cached_bytes, limit_bytes; /* limit 0: disabled until set */
static uint64_t n_hits, n_misses;

static void lock(void) { while (atomic_flag_test_and_set_explicit(&lock_flag, memory_order_acquire)) {} }
static void unlock(void) { atomic_flag_clear_explicit(&lock_flag, memory_order_release); }

static void *data_of(void *base) { return (char *)base + HEADER; }
static void *base_of(void *data) { return (char *)data - HEADER; }
static size_t cap_of(void *data) { return ((block_header *)base_of(data))->cap; }

#if HAVE_MMAP
static size_t mapped_length(size_t cap) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (HEADER + cap + page - 1) / page * page;
}
#endif

/* New memory for `cap` data bytes. */
static void *block_new(size_t cap) {
    if (cap > SIZE_MAX - HEADER - 2 * HUGE_ALIGN) return NULL;
    void *base = NULL;
#if HAVE_MMAP
    if (cap >= FASTCE_CACHE_MIN_BYTES) {
        /* Map HUGE_ALIGN more, then unmap what lies before the first 2 MiB boundary and after
           the block. */
        const size_t len = mapped_length(cap), over = len + HUGE_ALIGN;
        char *p = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
        char *aligned = (char *)(((uintptr_t)p + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
        if (aligned > p) munmap(p, (size_t)(aligned - p));
        if (p + over > aligned + len) munmap(aligned + len, (size_t)(p + over - (aligned + len)));
#ifdef MADV_HUGEPAGE
        madvise(aligned, len, MADV_HUGEPAGE); /* advice only: failure is harmless */
#endif
        base = aligned;
    }
#endif
    if (!base && posix_memalign(&base, HEADER, HEADER + cap) != 0) return NULL;
    ((block_header *)base)->cap = cap;
    return base;
}

static void block_free(void *base) {
    if (!base) return;
#if HAVE_MMAP
    const size_t cap = ((block_header *)base)->cap;
    if (cap >= FASTCE_CACHE_MIN_BYTES) {
        munmap(base, mapped_length(cap));
        return;
    }
#endif
    free(base);
}

/* Removes and returns the cached block that best serves `size` (capacity in [size, size + size/8],
   the smallest such), or NULL. Under the lock. */
static void *take_block(size_t size) {
    size_t best = n_slots;
    for (size_t i = 0; i < n_slots; i++) {
        const size_t cap = slots[i].cap;
        if (cap >= size && cap - size <= size / 8 && (best == n_slots || cap < slots[best].cap)) best = i;
    }
    if (best == n_slots) return NULL;
    void *base = slots[best].base;
    cached_bytes -= slots[best].cap;
    memmove(&slots[best], &slots[best + 1], (n_slots - best - 1) * sizeof(slot_t));
    n_slots--;
    return base;
}

/* Drops the oldest cached blocks until the slots and the limit are respected; the dropped ones
   are written to `out` (at most FASTCE_CACHE_SLOTS + 1) to be freed outside the lock. */
static size_t evict_over_limit(void **out) {
    size_t n = 0;
    while (n_slots > FASTCE_CACHE_SLOTS || (n_slots > 0 && cached_bytes > limit_bytes)) {
        out[n++] = slots[0].base;
        cached_bytes -= slots[0].cap;
        memmove(&slots[0], &slots[1], (n_slots - 1) * sizeof(slot_t));
        n_slots--;
    }
    return n;
}

void *fastce_cache_malloc(void *ctx, size_t size) {
    (void)ctx;
    if (size == 0) size = 1;
    void *base = NULL;
    if (size >= FASTCE_CACHE_MIN_BYTES) {
        lock();
        base = take_block(size);
        if (base) n_hits++; else n_misses++;
        unlock();
    }
    if (!base) base = block_new(size);
    return base ? data_of(base) : NULL;
}

void *fastce_cache_calloc(void *ctx, size_t nelem, size_t elsize) {
    if (elsize && nelem > SIZE_MAX / elsize) return NULL;
    void *p = fastce_cache_malloc(ctx, nelem * elsize);
    if (p) memset(p, 0, nelem * elsize);
    return p;
}

void fastce_cache_free(void *ctx, void *ptr, size_t size) {
    (void)ctx; (void)size; /* the header knows the capacity */
    if (!ptr) return;
    void *base = base_of(ptr);
    const size_t cap = cap_of(ptr);
    void *evicted[FASTCE_CACHE_SLOTS + 1];
    size_t n_evicted = 0;
    if (cap >= FASTCE_CACHE_MIN_BYTES) {
        lock();
        if (cap <= limit_bytes) { /* keep it, as the newest */
            slots[n_slots].base = base;
            slots[n_slots].cap = cap;
            n_slots++;
            cached_bytes += cap;
            base = NULL;
            n_evicted = evict_over_limit(evicted);
        }
        unlock();
    }
    block_free(base);
    for (size_t i = 0; i < n_evicted; i++) block_free(evicted[i]);
}

void *fastce_cache_realloc(void *ctx, void *ptr, size_t new_size) {
    if (!ptr) return fastce_cache_malloc(ctx, new_size);
    const size_t cap = cap_of(ptr);
    if (new_size <= cap && cap < FASTCE_CACHE_MIN_BYTES) return ptr;
    void *p = fastce_cache_malloc(ctx, new_size);
    if (!p) return NULL; /* realloc semantics: the old block stays valid */
    memcpy(p, ptr, new_size < cap ? new_size : cap);
    fastce_cache_free(ctx, ptr, cap);
    return p;
}

void fastce_cache_set_limit(size_t bytes) {
    void *evicted[FASTCE_CACHE_SLOTS + 1];
    lock();
    limit_bytes = bytes;
    const size_t n = evict_over_limit(evicted);
    unlock();
    for (size_t i = 0; i < n; i++) block_free(evicted[i]);
}

size_t fastce_cache_release(void) {
    void *evicted[FASTCE_CACHE_SLOTS + 1];
    size_t n = 0, freed;
    lock();
    freed = cached_bytes;
    while (n_slots > 0) evicted[n++] = slots[--n_slots].base;
    cached_bytes = 0;
    unlock();
    for (size_t i = 0; i < n; i++) block_free(evicted[i]);
    return freed;
}

fastce_cache_stats fastce_cache_get_stats(void) {
    fastce_cache_stats s;
    lock();
    s.limit = limit_bytes;
    s.cached_bytes = cached_bytes;
    s.cached_blocks = n_slots;
    s.hits = n_hits;
    s.misses = n_misses;
    unlock();
    return s;
}
