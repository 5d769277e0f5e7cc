// Settings: every DEMI_* environment variable the library reads, parsed in
// one place.
//
// demi_init builds its LibOSOptions with OptionsFromEnvironment(). Each
// setting has a name, a form ("a positive count of bytes", "0 or 1", ...)
// and the option it sets; an unset variable leaves the default. A value that
// does not have the setting's form (does not parse, is out of range, or is
// zero where a positive count is needed) is an error naming the variable,
// the value and the form: demi_init then fails with EINVAL and logs it. No
// value is ever ignored in favour of a default.
//
//   absl::StatusOr<LibOSOptions> options = OptionsFromEnvironment(getenv);
//
// DEMI_LOG_LEVEL is read by the logger itself (common/logging.h: it logs
// before demi_init too); this parser only checks its form, with the
// logger's own ParseLogLevel.
//
// Thread-safety: the functions are pure (the lookup is the caller's);
// Settings() is a constant table.

#ifndef DEMI_LIBOS_SETTINGS_H_
#define DEMI_LIBOS_SETTINGS_H_

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "libos/options.h"

namespace demi::libos {

// One DEMI_* variable: its name, the form its value must have (for error
// messages and the documentation check), and its parser: true if `text` has
// the form, having set the option; false, *options unchanged, if not.
struct Setting {
  const char* name;
  const char* form;
  bool (*apply)(const char* text, LibOSOptions* options);
};

// Every variable OptionsFromEnvironment() reads, in the README's order.
absl::Span<const Setting> Settings();

// The options with each set variable applied; `lookup(name)` returns the
// variable's value, or null when unset (getenv does). EINVAL (an
// InvalidArgument status carrying it, see common/errno_status.h) for the
// first variable whose value does not have its form.
absl::StatusOr<LibOSOptions> OptionsFromEnvironment(
    absl::FunctionRef<const char*(const char*)> lookup);

// DEMI_SPIN_US: a count of microseconds (0 included), or "inf" / a negative
// count for "never sleep". False for anything else, *out unchanged.
bool ParseSpinMicros(const char* text, absl::Duration* out);

}  // namespace demi::libos

#endif  // DEMI_LIBOS_SETTINGS_H_
