#include "rdma/buffer_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <new>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"

namespace demi::rdma {
namespace {

constexpr size_t kMaxMinChunkBytes = size_t{1} << 30;
// The largest cap: its descriptors' address range (1/2 of it) must fit.
constexpr size_t kMaxPoolBytes = size_t{1} << 40;

static_assert(std::has_single_bit(BufferPool::kMinCapacity));
static_assert(std::has_single_bit(BufferPool::kMaxBufferSizeLimit));
static_assert(BufferPool::kMinBuffersPerChunk > 1);

size_t PageSize() {
  static const size_t page_size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page_size;
}

static_assert(sizeof(void*) != 8 || sizeof(PoolBuffer) == 32);

// "message (errno N)", for the message of a status wrapped in another.
std::string Describe(const absl::Status& status) {
  return absl::StrCat(status.message(), " (errno ", ErrnoFromStatus(status),
                      ")");
}

}  // namespace

// A chunk: `bytes` of anonymous memory, its registration and the descriptors
// of its buffers. Destruction deregisters, then unmaps.
struct BufferPool::Chunk {
  Chunk() = default;
  Chunk(const Chunk&) = delete;
  Chunk& operator=(const Chunk&) = delete;
  ~Chunk() {
    registration.reset();
    if (memory != nullptr && munmap(memory, bytes) != 0) {
      DEMI_LOG(kError, ErrnoStatus(errno, "buffer pool: munmap").message());
    }
  }

  void* memory = nullptr;
  size_t bytes = 0;
  std::unique_ptr<Registration> registration;
  PoolBuffer* buffers = nullptr;  // in the pool's descriptor range
  size_t count = 0;
};

absl::StatusOr<std::unique_ptr<BufferPool>> BufferPool::Create(
    Registrar* registrar, const BufferPoolOptions& options) {
  if (registrar == nullptr)
    return ErrnoError(EINVAL, "buffer pool: no registrar");
  if (options.max_buffer_size == 0 ||
      options.max_buffer_size > kMaxBufferSizeLimit) {
    return ErrnoError(
        EINVAL,
        absl::StrCat("buffer pool: max_buffer_size ", options.max_buffer_size,
                     " is not in [1, ", kMaxBufferSizeLimit, "]"));
  }
  if (!std::has_single_bit(options.min_chunk_bytes) ||
      options.min_chunk_bytes < PageSize() ||
      options.min_chunk_bytes > kMaxMinChunkBytes) {
    return ErrnoError(
        EINVAL,
        absl::StrCat("buffer pool: min_chunk_bytes ", options.min_chunk_bytes,
                     " is not a power of two in [page size, ",
                     kMaxMinChunkBytes, "]"));
  }
  if (options.max_pool_bytes == 0) {
    return ErrnoError(EINVAL, "buffer pool: max_pool_bytes is 0");
  }
  if (options.max_pool_bytes > kMaxPoolBytes) {
    return ErrnoError(EINVAL, absl::StrCat("buffer pool: max_pool_bytes ",
                                           options.max_pool_bytes,
                                           " is more than ", kMaxPoolBytes));
  }
  // Room for the most descriptors the cap allows (every chunk of the
  // smallest class), reserved only: pages are made usable chunk by chunk.
  absl::StatusOr<ReservedRange> descriptors = ReservedRange::Reserve(
      (options.max_pool_bytes / kMinCapacity + 1) * sizeof(PoolBuffer));
  if (!descriptors.ok()) {
    return ErrnoError(ENOMEM, absl::StrCat("buffer pool: descriptors: ",
                                           Describe(descriptors.status())));
  }
  return std::unique_ptr<BufferPool>(
      new BufferPool(registrar, options, *std::move(descriptors)));
}

BufferPool::BufferPool(Registrar* registrar, const BufferPoolOptions& options,
                       ReservedRange descriptors)
    : registrar_(registrar),
      options_(options),
      num_classes_(ClassOf(options.max_buffer_size) + 1),
      descriptors_(std::move(descriptors)),
      descriptors_base_(reinterpret_cast<uintptr_t>(descriptors_.base())) {
  static_assert(BufferPool::ClassOf(kMaxBufferSizeLimit) + 1 == kMaxClasses);
}

BufferPool::~BufferPool() {
  demi::MutexLock lock(&mu_);
  size_t in_use = 0;
  for (const SizeClass& size_class : classes_) in_use += size_class.in_use;
  if (in_use > 0) {
    DEMI_LOG(kWarning, "buffer pool destroyed with ", in_use,
             " buffers still allocated");
  }
  // Every registration goes before any memory is unmapped.
  for (const std::unique_ptr<Chunk>& chunk : chunks_) {
    chunk->registration.reset();
  }
  chunks_.clear();
}

size_t BufferPool::ChunkBytes(size_t size_class) const {
  return std::max(options_.min_chunk_bytes,
                  kMinBuffersPerChunk * ClassCapacity(size_class));
}

absl::StatusOr<PoolBuffer*> BufferPool::Allocate(size_t size) {
  if (size == 0) return ErrnoError(EINVAL, "buffer pool: allocating 0 bytes");
  if (size > options_.max_buffer_size) {
    return ErrnoError(EMSGSIZE,
                      absl::StrCat("buffer pool: ", size,
                                   " bytes is more than the maximum buffer "
                                   "size, ",
                                   options_.max_buffer_size));
  }
  const size_t size_class = ClassOf(size);
  const size_t chunk_bytes = ChunkBytes(size_class);
  size_t reserved;
  {
    demi::MutexLock lock(&mu_);
    SizeClass& state = classes_[size_class];
    if (PoolBuffer* buffer = state.free_list; buffer != nullptr) {
      state.free_list = buffer->next_free_;
      buffer->next_free_ = nullptr;
      buffer->pins_.Reset();
      buffer->in_use_.store(true, std::memory_order_release);
      ++state.in_use;
      return buffer;
    }
    reserved = reserved_bytes_;
    if (chunk_bytes <= options_.max_pool_bytes - reserved_bytes_) {
      reserved_bytes_ += chunk_bytes;
    }
  }
  if (chunk_bytes > options_.max_pool_bytes - reserved) {
    return ErrnoError(
        ENOMEM, absl::StrCat("buffer pool: no free ", ClassCapacity(size_class),
                             "-byte buffer, and another ", chunk_bytes,
                             "-byte chunk would pass the cap of ",
                             options_.max_pool_bytes, " bytes (", reserved,
                             " registered or being registered)"));
  }

  // The chunk's bytes are reserved: create it without the lock.
  absl::StatusOr<std::unique_ptr<Chunk>> created = CreateChunk(size_class);
  if (!created.ok()) {
    demi::MutexLock lock(&mu_);
    reserved_bytes_ -= chunk_bytes;
    return created.status();
  }
  std::unique_ptr<Chunk> chunk = std::move(*created);
  demi::MutexLock lock(&mu_);
  absl::StatusOr<PoolBuffer*> placed = PlaceDescriptors(*chunk, size_class);
  if (!placed.ok()) {
    reserved_bytes_ -= chunk_bytes;
    return placed.status();  // the chunk is deregistered and unmapped
  }
  PoolBuffer* const first = *placed;
  PoolBuffer* const last = first + chunk->count - 1;
  first->pins_.Reset();
  first->in_use_.store(true, std::memory_order_release);
  first->next_free_ = nullptr;
  SizeClass& state = classes_[size_class];
  // Buffers 1..count-1 go ahead of any freed meanwhile by other threads.
  last->next_free_ = state.free_list;
  state.free_list = first + 1;
  ++state.chunks;
  state.buffers += chunk->count;
  ++state.in_use;
  registered_bytes_ += chunk_bytes;
  chunks_.push_back(std::move(chunk));
  return first;
}

absl::StatusOr<std::unique_ptr<BufferPool::Chunk>> BufferPool::CreateChunk(
    size_t size_class) const {
  const size_t bytes = ChunkBytes(size_class);
  const size_t capacity = ClassCapacity(size_class);
  auto chunk = std::make_unique<Chunk>();
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    absl::Status status = ErrnoStatus(errno, "mmap");
    return ErrnoError(ENOMEM, absl::StrCat("buffer pool: cannot map a ", bytes,
                                           "-byte chunk: ", Describe(status)));
  }
  chunk->memory = memory;
  chunk->bytes = bytes;

  absl::StatusOr<std::unique_ptr<Registration>> registration =
      registrar_->Register(memory, bytes);
  if (!registration.ok()) {
    return ErrnoError(
        ENOMEM, absl::StrCat("buffer pool: cannot register a ", bytes,
                             "-byte chunk: ", Describe(registration.status())));
  }
  chunk->registration = std::move(*registration);
  chunk->count = bytes / capacity;
  return chunk;
}

absl::StatusOr<PoolBuffer*> BufferPool::PlaceDescriptors(Chunk& chunk,
                                                         size_t size_class) {
  const size_t count = chunk.count;
  const size_t bytes = count * sizeof(PoolBuffer);
  if (bytes > descriptors_.size() - descriptors_used_) {
    return ErrnoError(ENOMEM, absl::StrCat("buffer pool: no room for ", count,
                                           " more buffer descriptors"));
  }
  const size_t end = descriptors_used_ + bytes;
  if (absl::Status grown = descriptors_.Grow(end); !grown.ok()) {
    return ErrnoError(
        ENOMEM,
        absl::StrCat("buffer pool: cannot map descriptors: ", Describe(grown)));
  }
  PoolBuffer* const first =
      reinterpret_cast<PoolBuffer*>(descriptors_.base() + descriptors_used_);
  const size_t capacity = ClassCapacity(size_class);
  const MemoryKeys keys = chunk.registration->keys();
  char* const base = static_cast<char*>(chunk.memory);
  for (size_t i = 0; i < count; ++i) {
    PoolBuffer* buffer = new (first + i) PoolBuffer();
    buffer->data_ = base + i * capacity;
    buffer->next_free_ = i + 1 < count ? first + i + 1 : nullptr;
    buffer->keys_ = keys;
    buffer->size_class_ = static_cast<uint8_t>(size_class);
    buffer->in_use_.store(false, std::memory_order_release);
  }
  chunk.buffers = first;
  descriptors_used_ = end;
  descriptors_published_.store(end, std::memory_order_release);
  return first;
}

absl::Status BufferPool::Free(PoolBuffer* buffer) {
  if (buffer == nullptr) {
    return ErrnoError(EINVAL, "buffer pool: freeing a null buffer");
  }
  bool owned;
  {
    demi::MutexLock lock(&mu_);
    owned = Owns(buffer);
    if (owned && buffer->in_use_.load(std::memory_order_relaxed)) {
      SizeClass& state = classes_[buffer->size_class_];
      buffer->in_use_.store(false, std::memory_order_release);
      buffer->next_free_ = state.free_list;
      state.free_list = buffer;
      --state.in_use;
      return absl::OkStatus();
    }
  }
  // Build the error without the lock.
  if (!owned) {
    return ErrnoError(EINVAL,
                      "buffer pool: freeing a pointer that is not a "
                      "buffer of this pool");
  }
  return ErrnoError(EINVAL,
                    "buffer pool: freeing a buffer that is not allocated "
                    "(double free?)");
}

bool BufferPool::Owns(const PoolBuffer* buffer) const {
  // Only the pointer's value is examined until it is known to be ours (a
  // pointer below the range wraps to a large offset). Lock-free: the
  // published descriptors were placed under the mutex before the release
  // store (under the mutex, the same figure as descriptors_used_).
  const uintptr_t offset =
      reinterpret_cast<uintptr_t>(buffer) - descriptors_base_;
  return offset < descriptors_published_.load(std::memory_order_acquire) &&
         offset % sizeof(PoolBuffer) == 0;
}

bool BufferPool::IsAllocated(const PoolBuffer* buffer) const {
  // A buffer freed or allocated by another thread meanwhile is that
  // thread's race with the caller's; the answer is one of the two states.
  return Owns(buffer) && buffer->in_use_.load(std::memory_order_acquire);
}

BufferPoolStats BufferPool::Stats() const {
  BufferPoolStats stats;
  stats.size_classes.resize(num_classes_);
  demi::MutexLock lock(&mu_);
  stats.registered_bytes = registered_bytes_;
  stats.chunks = chunks_.size();
  for (size_t i = 0; i < num_classes_; ++i) {
    const SizeClass& state = classes_[i];
    stats.size_classes[i] =
        BufferPoolStats::SizeClass{static_cast<uint32_t>(ClassCapacity(i)),
                                   state.chunks, state.buffers, state.in_use};
    stats.in_use += state.in_use;
  }
  return stats;
}

absl::Status BufferPool::CheckInvariants() const {
  demi::MutexLock lock(&mu_);
  return CheckInvariantsLocked();
}

absl::Status BufferPool::CheckInvariantsLocked() const {
  auto fail = [](auto&&... pieces) {
    return ErrnoError(EIO, absl::StrCat("buffer pool invariant: ", pieces...));
  };
  std::array<SizeClass, kMaxClasses> counted{};
  size_t bytes = 0;
  size_t descriptors = 0;  // bytes of descriptors of the chunks so far
  for (const std::unique_ptr<Chunk>& chunk : chunks_) {
    if (chunk->count == 0 || chunk->registration == nullptr) {
      return fail("empty or unregistered chunk");
    }
    const PoolBuffer* first = &chunk->buffers[0];
    const size_t size_class = first->size_class_;
    if (size_class >= num_classes_) return fail("bad class ", size_class);
    const size_t capacity = ClassCapacity(size_class);
    if (chunk->bytes != ChunkBytes(size_class) ||
        chunk->count * capacity != chunk->bytes) {
      return fail("chunk of ", chunk->bytes, " bytes for class ", size_class);
    }
    if (reinterpret_cast<const char*>(first) !=
        descriptors_.base() + descriptors) {
      return fail("chunk descriptors out of place in the range");
    }
    descriptors += chunk->count * sizeof(PoolBuffer);
    const MemoryKeys keys = chunk->registration->keys();
    for (size_t i = 0; i < chunk->count; ++i) {
      const PoolBuffer& buffer = chunk->buffers[i];
      if (buffer.data_ != static_cast<char*>(chunk->memory) + i * capacity ||
          buffer.capacity() != capacity || buffer.size_class_ != size_class ||
          !(buffer.keys_ == keys)) {
        return fail("descriptor ", i, " of a class-", size_class,
                    " chunk is corrupt");
      }
      if (buffer.in_use_.load(std::memory_order_relaxed))
        ++counted[size_class].in_use;
    }
    ++counted[size_class].chunks;
    counted[size_class].buffers += chunk->count;
    bytes += chunk->bytes;
  }
  if (descriptors != descriptors_used_ ||
      descriptors_used_ > descriptors_.writable()) {
    return fail(descriptors, " bytes of descriptors in chunks; used ",
                descriptors_used_, ", writable ", descriptors_.writable());
  }
  if (bytes != registered_bytes_ || reserved_bytes_ < registered_bytes_ ||
      reserved_bytes_ > options_.max_pool_bytes) {
    return fail("chunks hold ", bytes, " bytes; registered ", registered_bytes_,
                ", reserved ", reserved_bytes_, ", cap ",
                options_.max_pool_bytes);
  }
  for (size_t i = 0; i < kMaxClasses; ++i) {
    const SizeClass& state = classes_[i];
    if (state.chunks != counted[i].chunks ||
        state.buffers != counted[i].buffers ||
        state.in_use != counted[i].in_use) {
      return fail("class ", i, " counts ", state.chunks, " chunks, ",
                  state.buffers, " buffers, ", state.in_use, " in use; found ",
                  counted[i].chunks, ", ", counted[i].buffers, ", ",
                  counted[i].in_use);
    }
    size_t free = 0;
    for (const PoolBuffer* buffer = state.free_list; buffer != nullptr;
         buffer = buffer->next_free_) {
      if (free == state.buffers) return fail("class ", i, " free list loops");
      if (!Owns(buffer) || buffer->in_use_.load(std::memory_order_relaxed) ||
          buffer->size_class_ != i) {
        return fail("class ", i, " free list holds a bad descriptor");
      }
      ++free;
    }
    if (free != state.buffers - state.in_use) {
      return fail("class ", i, " free list holds ", free, " of ",
                  state.buffers - state.in_use, " free buffers");
    }
  }
  return absl::OkStatus();
}

}  // namespace demi::rdma
