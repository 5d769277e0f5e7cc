#include "libos/settings.h"

#include <cerrno>
#include <cstdint>
#include <limits>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/logging.h"
#include "rdma/buffer_pool.h"

namespace demi::libos {
namespace {

// A decimal count: digits only (no sign, space or prefix), no overflow.
bool ParseCount(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      return false;
    }
    value = value * 10 + digit;
  }
  *out = value;
  return true;
}

// A count in [least, most], stored as T (`most` fits T).
template <typename T>
bool CountIn(const char* text, uint64_t least, uint64_t most, T* out) {
  uint64_t value;
  if (!ParseCount(text, &value) || value < least || value > most) return false;
  *out = static_cast<T>(value);
  return true;
}

template <typename T>
bool Positive(const char* text, uint64_t most, T* out) {
  return CountIn(text, 1, most, out);
}

bool Switch(const char* text, bool* out) {
  const std::string_view view(text);
  if (view != "0" && view != "1") return false;
  *out = view == "1";
  return true;
}

bool Milliseconds(const char* text, absl::Duration* out) {
  int64_t ms;
  // Up to about 292 million years: absl::Milliseconds takes an int64_t.
  if (!CountIn(text, 0, std::numeric_limits<int64_t>::max() / 1000000, &ms)) {
    return false;
  }
  *out = absl::Milliseconds(ms);
  return true;
}

constexpr uint64_t kMaxSize = std::numeric_limits<size_t>::max();
constexpr uint64_t kMaxU32 = std::numeric_limits<uint32_t>::max();

// The table: one row per variable, in the README's order. The form strings
// end up in demi_init's error message after "must be".
const Setting kSettings[] = {
    {"DEMI_MR_CACHE", "0 or 1",
     [](const char* t, LibOSOptions* o) {
       return Switch(t, &o->region_cache_enabled);
     }},
    {"DEMI_MR_CACHE_MAX_BYTES", "a positive count of bytes",
     [](const char* t, LibOSOptions* o) {
       return Positive(t, kMaxSize, &o->region_cache.max_pinned_bytes);
     }},
    {"DEMI_MR_CACHE_MAX_REGIONS", "a positive count",
     [](const char* t, LibOSOptions* o) {
       return Positive(t, kMaxSize, &o->region_cache.max_regions);
     }},
    {"DEMI_EAGER_LIMIT", "a positive count of bytes, at most 1048576",
     [](const char* t, LibOSOptions* o) {
       return Positive(t, rdma::BufferPool::kMaxBufferSizeLimit,
                       &o->connection.eager_limit);
     }},
    {"DEMI_RENDEZVOUS_THRESHOLD",
     "a positive count of bytes, at most 4294967295",
     [](const char* t, LibOSOptions* o) {
       return Positive(t, kMaxU32, &o->connection.rendezvous_threshold);
     }},
    {"DEMI_LARGE_POOL_MAX_BYTES", "a positive count of bytes",
     [](const char* t, LibOSOptions* o) {
       return Positive(t, kMaxSize, &o->large_pool.max_bytes);
     }},
    {"DEMI_RENDEZVOUS_QUOTA", "a positive count of bytes",
     [](const char* t, LibOSOptions* o) {
       return Positive(t, std::numeric_limits<uint64_t>::max(),
                       &o->connection.rendezvous_quota);
     }},
    {"DEMI_DGRAM_ROUTE_TTL_MS", "a count of milliseconds (0: never)",
     [](const char* t, LibOSOptions* o) {
       return Milliseconds(t, &o->datagram_route_ttl);
     }},
    {"DEMI_COALESCE_SENDS", "0 or 1",
     [](const char* t, LibOSOptions* o) {
       return Switch(t, &o->connection.coalesce_sends);
     }},
    {"DEMI_ACK_TIMEOUT", "a count from 0 to 31",
     [](const char* t, LibOSOptions* o) {
       return CountIn(t, 0, 31, &o->connection.ack_timeout);
     }},
    {"DEMI_RETRY_COUNT", "a count from 0 to 7",
     [](const char* t, LibOSOptions* o) {
       return CountIn(t, 0, 7, &o->connection.retry_count);
     }},
    {"DEMI_KEEPALIVE_MS", "a count of milliseconds (0: never)",
     [](const char* t, LibOSOptions* o) {
       return Milliseconds(t, &o->keepalive);
     }},
    {"DEMI_CLOSE_TIMEOUT_MS", "a count of milliseconds",
     [](const char* t, LibOSOptions* o) {
       return Milliseconds(t, &o->close_timeout);
     }},
    {"DEMI_STALL_TIMEOUT_MS", "a count of milliseconds (0: never)",
     [](const char* t, LibOSOptions* o) {
       return Milliseconds(t, &o->stall_timeout);
     }},
    {"DEMI_MAX_CONNECTIONS", "a positive count, at most 4294967295",
     [](const char* t, LibOSOptions* o) {
       return Positive(t, kMaxU32, &o->max_connections);
     }},
    {"DEMI_SPIN_US",
     "a count of microseconds, or inf (or a negative count) for never "
     "sleeping",
     [](const char* t, LibOSOptions* o) {
       return ParseSpinMicros(t, &o->spin);
     }},
    {"DEMI_LOG_LEVEL", "error, warning, info or debug",
     [](const char* t, LibOSOptions*) {
       LogLevel level;
       return ParseLogLevel(t, &level);
     }},
};

}  // namespace

absl::Span<const Setting> Settings() { return kSettings; }

absl::StatusOr<LibOSOptions> OptionsFromEnvironment(
    absl::FunctionRef<const char*(const char*)> lookup) {
  LibOSOptions options;
  for (const Setting& setting : kSettings) {
    const char* text = lookup(setting.name);
    if (text == nullptr) continue;
    if (!setting.apply(text, &options)) {
      return ErrnoError(EINVAL, absl::StrCat(setting.name, "=\"", text,
                                             "\": must be ", setting.form));
    }
  }
  return options;
}

bool ParseSpinMicros(const char* text, absl::Duration* out) {
  if (text == nullptr) return false;
  std::string_view view(text);
  if (view == "inf" || view == "infinite") {
    *out = absl::InfiniteDuration();
    return true;
  }
  const bool negative = !view.empty() && view.front() == '-';
  if (negative) view.remove_prefix(1);
  // Digits only (no sign but the one minus, no space), at most 18 of them.
  if (view.empty() || view.size() > 18) return false;
  uint64_t micros = 0;
  if (!ParseCount(view, &micros)) return false;
  *out = negative ? absl::InfiniteDuration()
                  : absl::Microseconds(static_cast<int64_t>(micros));
  return true;
}

}  // namespace demi::libos
