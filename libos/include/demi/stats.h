/*
 * Counters the library keeps, for applications and benchmarks. Not part of
 * Demikernel's API: an extension of this library.
 */

#ifndef DEMI_STATS_H_
#define DEMI_STATS_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The memory-region cache, which registers application memory pushed with
 * sga_buf == NULL (summed over RDMA devices). See README.md.
 */
typedef struct demi_mr_cache_stats {
  uint64_t hits;          /* segments served by a cached registration */
  uint64_t misses;        /* segments that needed a registration */
  uint64_t evictions;     /* idle registrations dropped to stay under caps */
  uint64_t invalidations; /* registrations dropped: their memory changed */
  uint64_t uncached;      /* registrations made for one push only */
  uint64_t pinned_bytes;  /* bytes registered now */
  uint64_t regions;       /* registrations now */
  /* 1 if caching (userfaultfd watches memory), 0 if registering per push. */
  uint32_t caching;
  uint32_t reserved;
} demi_mr_cache_stats_t;

/* Fills *stats. EINVAL if stats is NULL or before demi_init. */
int demi_mr_cache_stats(demi_mr_cache_stats_t *stats);

#ifdef __cplusplus
}
#endif

#endif /* DEMI_STATS_H_ */
