#include "libos/thread_buffer_stocks.h"

#include <pthread.h>

#include <atomic>

#include "absl/base/attributes.h"
#include "common/logging.h"

namespace demi::libos {
namespace {

// Which generation is alive, and the last one handed out.
std::atomic<uint64_t> live_generation{0};
std::atomic<uint64_t> last_generation{0};

struct Stock {
  Stock(uint64_t generation, rdma::BufferPool& pool)
      : generation(generation), cache(pool) {}
  const uint64_t generation;
  rdma::BufferCache cache;
};

// A plain pointer in the static TLS block: no guard, no __tls_get_addr.
ABSL_CONST_INIT thread_local Stock* this_threads_stock
    __attribute__((tls_model("initial-exec"))) = nullptr;

void DeleteStock(void* stock_pointer) {
  auto* stock = static_cast<Stock*>(stock_pointer);
  // A stock that outlived its LibOS drops its buffers (their pool is gone).
  if (live_generation.load(std::memory_order_acquire) != stock->generation) {
    stock->cache.Forget();
  }
  delete stock;
}

pthread_key_t StockKey() {
  static const pthread_key_t key = [] {
    pthread_key_t made;
    if (pthread_key_create(&made, DeleteStock) != 0) {
      DEMI_LOG(kError,
               "pthread_key_create failed: threads' buffer stocks "
               "are not given back at their exit");
    }
    return made;
  }();
  return key;
}

}  // namespace

ThreadBufferStocks::ThreadBufferStocks(rdma::BufferPool& pool)
    : pool_(pool), generation_(last_generation.fetch_add(1) + 1) {}

ThreadBufferStocks::~ThreadBufferStocks() {
  if (Stock* mine = this_threads_stock;
      mine != nullptr && mine->generation == generation_) {
    pthread_setspecific(StockKey(), nullptr);
    this_threads_stock = nullptr;
    delete mine;
  }
  uint64_t live = generation_;
  live_generation.compare_exchange_strong(live, 0);
}

void ThreadBufferStocks::MakeLive() {
  live_generation.store(generation_, std::memory_order_release);
}

rdma::BufferCache& ThreadBufferStocks::ThisThreads() {
  Stock* mine = this_threads_stock;
  if (mine != nullptr && mine->generation == generation_) return mine->cache;
  return MakeThisThreads();
}

rdma::BufferCache& ThreadBufferStocks::MakeThisThreads() {
  if (Stock* old = this_threads_stock; old != nullptr) {
    DeleteStock(old);  // an earlier LibOS's
  }
  auto* mine = new Stock(generation_, pool_);
  this_threads_stock = mine;
  pthread_setspecific(StockKey(), mine);
  return mine->cache;
}

}  // namespace demi::libos
