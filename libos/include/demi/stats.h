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

/*
 * Datagram sockets (SOCK_DGRAM), summed over the process's sockets. Datagrams
 * are unreliable: one that arrives while every receive buffer of its socket
 * is held (popped and not freed, or not popped) is dropped by the device.
 */
typedef struct demi_dgram_stats {
  uint64_t sent;        /* pushes the device sent (not: someone received) */
  uint64_t send_failed; /* pushes completed FAILED (resolution, close...) */
  uint64_t received;    /* datagrams received */
  uint64_t malformed;   /* datagrams dropped: not in this library's format */
  uint64_t filtered;    /* dropped: not from a connected socket's peer */
  /* Times a socket's receive queue ran empty (arrivals then are dropped). */
  uint64_t receive_queue_empty;
  /* Datagrams the devices dropped for lack of a posted receive, where a
   * device counts them (device-wide; see device_drops_reported). */
  uint64_t device_dropped;
  uint64_t ah_hits;    /* pushes/connects that found the destination cached */
  uint64_t ah_misses;  /* pushes/connects that waited for its resolution */
  uint64_t ah_entries; /* destinations cached now (address handles) */
  uint64_t resolution_failures; /* destinations that could not be resolved */
  /* The largest payload one datagram carries (smallest over bound
   * sockets; 0 if none is bound): path MTU less this library's header. */
  uint32_t max_payload;
  /* 1 if device_dropped comes from a device counter; 0 if no device of a
   * bound socket keeps one (Soft-RoCE does not). */
  uint32_t device_drops_reported;
  /* Cached destinations are resolved again in the background once they are
   * DEMI_DGRAM_ROUTE_TTL_MS old (a peer may have re-bound its address in
   * another process), and at once by demi_connect to a cached destination:
   * refreshes that succeeded, those that found another
   * queue pair there (sends now go to it), and those that failed (the
   * destination left the cache; the next push resolves it anew). */
  uint64_t route_refreshes;
  uint64_t route_changes;
  uint64_t route_drops;
  /* Datagrams dropped because their header names another sender address
   * than the packet's own network header (GRH): forged, or a misconfigured
   * peer. sga_addr's IPv4 address is always the packet's. */
  uint64_t forged;
  /* Destinations left the cache (refreshed to another queue pair, dropped,
   * or a local socket closed) whose address handles are kept until the
   * sends that may use them complete: a handful at most, 0 when idle. */
  uint64_t ah_stale;
} demi_dgram_stats_t;

/* Fills *stats. EINVAL if stats is NULL or before demi_init. */
int demi_dgram_stats(demi_dgram_stats_t *stats);

#ifdef __cplusplus
}
#endif

#endif /* DEMI_STATS_H_ */
