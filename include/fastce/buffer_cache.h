/* fastce/buffer_cache.h: a small cache of large output buffers, behind NumPy's allocator hooks.
 *
 * Why: a fresh gradient of a large input is fresh memory from the OS, which zeroes every page
 * at first touch. For a large gradient that zeroing is a large share of the fused
 * loss+gradient pass itself (docs/performance/notes_kernels.md). A training loop asks for a same-sized gradient every step, so
 * fastce keeps the memory of a gradient the program has dropped and hands it out again.
 *
 * What: fastce allocates its large outputs (the gradient of cross_entropy_with_grad, softmax,
 * log_softmax) through these functions, installed as a NumPy PyDataMem_Handler only around
 * that one allocation. The arrays are ordinary ndarrays that own their data; NumPy calls
 * fastce_cache_free when the last reference goes. A freed block of at least
 * FASTCE_CACHE_MIN_BYTES is kept (at most FASTCE_CACHE_SLOTS blocks, at most `limit` bytes in
 * all, the newest kept first); a later request of a size it can serve (the request's size up
 * to 1/8 more) takes it instead of new memory. Smaller buffers go to malloc and free.
 * Nothing is shared: a block is cached only after NumPy has released it, so no two live arrays
 * ever hold the same memory.
 *
 * Every block carries a 64-byte header (its capacity; HEADER in buffer_cache.c), so realloc and
 * free work for any pointer these functions returned. Thread-safe (a spinlock around the slot table;
 * memory is returned to the OS outside it). No Python.h.
 */
#ifndef FASTCE_BUFFER_CACHE_H
#define FASTCE_BUFFER_CACHE_H
#include <stddef.h>
#include <stdint.h>

#define FASTCE_CACHE_MIN_BYTES ((size_t)16 << 20)
/* Four: the linear head's gradient holds three at once (its chunk buffer, grad_input and
   grad_linear_weight); cross_entropy_with_grad needs one. */
#define FASTCE_CACHE_SLOTS 4

void *fastce_cache_malloc(void *ctx, size_t size);
void *fastce_cache_calloc(void *ctx, size_t nelem, size_t elsize);
void *fastce_cache_realloc(void *ctx, void *ptr, size_t new_size);
void fastce_cache_free(void *ctx, void *ptr, size_t size);

/* The most bytes the cache keeps; 0 disables it (and releases what it holds). */
void fastce_cache_set_limit(size_t bytes);
/* Returns the cached blocks' memory to the OS; returns how many bytes that was. */
size_t fastce_cache_release(void);

typedef struct {
    size_t limit, cached_bytes, cached_blocks;
    uint64_t hits, misses;  /* large requests served from the cache / from new memory */
} fastce_cache_stats;
fastce_cache_stats fastce_cache_get_stats(void);

#endif
