/*
 * An event descriptor for the application's own event loop. Not part of
 * Demikernel's API: an extension of this library.
 *
 * A program that runs its own epoll/poll loop (over sockets, pipes, timers)
 * cannot also sit in demi_wait. Instead it adds the descriptor of
 * demi_event_fd to its loop and follows one rule:
 *
 *   for (;;) {
 *     if (demi_event_arm() == EAGAIN) {      // something may be done
 *       take results: demi_wait_any / demi_wait_next_n with a zero timeout
 *       continue;
 *     }
 *     epoll_wait(...);                       // our descriptor among others
 *     if our descriptor is readable: take results as above
 *   }
 *
 * demi_event_arm makes progress (polls every queue), arms the completion
 * queues and returns 0 when nothing completed since the previous call and
 * no result waits to be taken: then the descriptor becomes readable as soon
 * as an operation of this process's queues may complete (a completion, an
 * rdma_cm event, a token another thread's call completed), and a sleep on
 * it loses nothing. It returns EAGAIN when an operation completed since the
 * previous call, when completed operations wait to be taken by a wait, or
 * when the library has work of its own to finish: sleeping now could wait
 * for an event that already happened, so take the results (or call
 * demi_event_arm again) first. So every operation the program starts must
 * be waited for, or the loop never sleeps again. A readable descriptor only
 * says "look": the wait that looks may find nothing new.
 *
 * The descriptor belongs to the library: do not read, write or close it.
 * One loop should use it. Threads that sleep in demi_wait* meanwhile still
 * wake for their own results. While a connection waits for large-message
 * memory (DEMI_LARGE_POOL_MAX_BYTES reached), demi_event_arm says EAGAIN
 * every time (the loop polls until memory is freed).
 */

#ifndef DEMI_EVENT_H_
#define DEMI_EVENT_H_

#ifdef __cplusplus
extern "C" {
#endif

/* The descriptor (level-triggered, for reading: EPOLLIN / POLLIN) in
 * *fd_out. EINVAL if fd_out is NULL or before demi_init; errors of
 * epoll_create1. The same descriptor for the life of the process. */
int demi_event_fd(int *fd_out);

/* 0: armed, sleep on the descriptor; EAGAIN: look first (see above);
 * EINVAL before demi_init; errors of arming the completion queues, of
 * epoll_create1 or of epoll_ctl. */
int demi_event_arm(void);

#ifdef __cplusplus
}
#endif

#endif /* DEMI_EVENT_H_ */
