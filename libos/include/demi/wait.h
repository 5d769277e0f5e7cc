/*
 * Waiting for asynchronous operations.
 *
 * A NULL timeout waits forever; a zero timeout checks once. A token whose
 * result has been returned is consumed: waiting on it again gives EINVAL.
 * ETIMEDOUT leaves the tokens valid.
 */

#ifndef DEMI_WAIT_H_
#define DEMI_WAIT_H_

#include <demi/cc.h>
#include <demi/types.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Declared here too: strict ISO C modes (-std=c99 without feature-test
 * macros) leave struct timespec out of <time.h>. */
struct timespec;

/* Waits for the operation `qt`; fills *qr_out with its result. EINVAL (NULL
 * qr_out, bad timeout, unknown or consumed token), ETIMEDOUT. */
int demi_wait(demi_qresult_t *qr_out, demi_qtoken_t qt,
              const struct timespec *timeout);

/*
 * Waits for the first of `num_qts` operations; fills *qr_out and sets
 * *ready_offset to its index (later tokens are not starved). EINVAL (NULL
 * argument, num_qts <= 0, bad timeout, an invalid token), ETIMEDOUT.
 */
int demi_wait_any(demi_qresult_t *qr_out, int *ready_offset,
                  const demi_qtoken_t qts[], int num_qts,
                  const struct timespec *timeout);

/*
 * Takes up to `num_qrs` results of any operations of the process (at least
 * one) into qr_out, their count in *num_qrs_out. EINVAL (NULL argument,
 * num_qrs <= 0, bad timeout), ETIMEDOUT.
 */
int demi_wait_next_n(demi_qresult_t *qr_out, int num_qrs, int *num_qrs_out,
                     const struct timespec *timeout);

#ifdef __cplusplus
}
#endif

#endif /* DEMI_WAIT_H_ */
