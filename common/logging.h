// A minimal, thread-safe logger to stderr.
//
// Used where an error cannot be returned: destructors that fail to release a
// verbs object, background progress. Each message is written with a single
// write(2), so lines from several threads never interleave. The level is read
// once from the environment variable DEMI_LOG_LEVEL (error, warning, info,
// debug; default warning).

#ifndef DEMI_COMMON_LOGGING_H_
#define DEMI_COMMON_LOGGING_H_

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace demi {

enum class LogLevel { kError = 0, kWarning = 1, kInfo = 2, kDebug = 3 };

// True when messages at `level` are written.
bool LogEnabled(LogLevel level);

// A DEMI_LOG_LEVEL value: "error", "warning", "info" or "debug". False for
// anything else (the logger then keeps its default, warning; demi_init
// refuses it: libos/settings.h), *level unchanged.
bool ParseLogLevel(const char* text, LogLevel* level);

// Writes "demi <level> file:line] message\n" to stderr.
void LogMessage(LogLevel level, const char* file, int line,
                absl::string_view message);

}  // namespace demi

// DEMI_LOG(kWarning, "ibv_destroy_qp: ", status.message());
// The arguments are only evaluated when the level is enabled.
#define DEMI_LOG(level, ...)                                          \
  do {                                                                \
    if (::demi::LogEnabled(::demi::LogLevel::level)) {                \
      ::demi::LogMessage(::demi::LogLevel::level, __FILE__, __LINE__, \
                         ::absl::StrCat(__VA_ARGS__));                \
    }                                                                 \
  } while (0)

#endif  // DEMI_COMMON_LOGGING_H_
