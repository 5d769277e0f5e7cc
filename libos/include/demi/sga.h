/*
 * Scatter-gather arrays owned by the library.
 *
 * demi_sgaalloc returns registered memory ready to push with no copy; popped
 * arrays also belong to the library. Both go back with demi_sgafree.
 */

#ifndef DEMI_SGA_H_
#define DEMI_SGA_H_

#include <demi/cc.h>
#include <demi/types.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Allocates a one-segment array of `size` bytes of registered memory. On
 * failure (size 0, too large, out of memory, library not initialized) the
 * result has sga_numsegs == 0 and sga_buf == NULL.
 */
demi_sgarray_t demi_sgaalloc(size_t size);

/*
 * Returns an array from demi_sgaalloc or from a pop to the library; a push in
 * flight keeps the memory alive until it completes. EINVAL: NULL, sga_buf
 * NULL, more than 16 segments, not the library's, or freed already.
 */
int demi_sgafree(demi_sgarray_t *sga);

#ifdef __cplusplus
}
#endif

#endif /* DEMI_SGA_H_ */
