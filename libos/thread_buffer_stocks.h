// ThreadBufferStocks: each thread's stock of free demi_sgaalloc buffers, so
// that allocating and freeing small arrays takes no lock.
//
// One per LibOS. A thread's stock is made on its first ThisThreads() and
// lives in a thread-local (one load from %fs, no __tls_get_addr); it goes
// back to the pool when the thread exits (a pthread key's destructor) or,
// for the thread that destroys the stocks, at once. A LibOS made later at
// the same address is told apart by a generation: a stock of an earlier,
// destroyed LibOS drops its buffers (their pool is gone) instead of giving
// them back.
//
// Thread-safety: ThisThreads() from any thread (each gets its own stock);
// construction, MakeLive and destruction by the LibOS's owner. Lifetime:
// the pool outlives the stocks object; threads may outlive both.

#ifndef DEMI_LIBOS_THREAD_BUFFER_STOCKS_H_
#define DEMI_LIBOS_THREAD_BUFFER_STOCKS_H_

#include <cstdint>

#include "rdma/buffer_cache.h"
#include "rdma/buffer_pool.h"

namespace demi::libos {

class ThreadBufferStocks {
 public:
  // Takes a new generation; stocks draw from `pool` (not owned).
  explicit ThreadBufferStocks(rdma::BufferPool& pool);
  ThreadBufferStocks(const ThreadBufferStocks&) = delete;
  ThreadBufferStocks& operator=(const ThreadBufferStocks&) = delete;
  // The calling thread's stock goes back to the pool; other threads' are
  // dropped when they exit.
  ~ThreadBufferStocks();

  // From now on, threads' stocks of this generation give their buffers back
  // at thread exit (call once the LibOS is made).
  void MakeLive();

  // The calling thread's stock, made on its first call.
  rdma::BufferCache& ThisThreads();

 private:
  rdma::BufferCache& MakeThisThreads();

  rdma::BufferPool& pool_;
  const uint64_t generation_;
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_THREAD_BUFFER_STOCKS_H_
