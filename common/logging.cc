#include "common/logging.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace demi {
namespace {

LogLevel LevelFromEnvironment() {
  LogLevel level;
  return ParseLogLevel(std::getenv("DEMI_LOG_LEVEL"), &level)
             ? level
             : LogLevel::kWarning;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "?";
}

}  // namespace

bool ParseLogLevel(const char* text, LogLevel* level) {
  if (text == nullptr) return false;
  for (LogLevel candidate : {LogLevel::kError, LogLevel::kWarning,
                             LogLevel::kInfo, LogLevel::kDebug}) {
    if (std::strcmp(text, LevelName(candidate)) == 0) {
      *level = candidate;
      return true;
    }
  }
  return false;
}

bool LogEnabled(LogLevel level) {
  static const LogLevel threshold = LevelFromEnvironment();
  return level <= threshold;
}

void LogMessage(LogLevel level, const char* file, int line,
                absl::string_view message) {
  const char* base = std::strrchr(file, '/');
  std::string text =
      absl::StrCat("demi ", LevelName(level), " ", base ? base + 1 : file, ":",
                   line, "] ", message, "\n");
  // A short write to stderr is not worth retrying; logging must not fail.
  ssize_t ignored = ::write(STDERR_FILENO, text.data(), text.size());
  (void)ignored;
}

}  // namespace demi
