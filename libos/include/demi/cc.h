/*
 * Compiler portability macros that Demikernel's headers define, so that a
 * program written for Demikernel that includes <demi/cc.h> (or uses these
 * macros on its own functions) compiles unchanged.
 *
 * The annotation macros in the style of Microsoft's source annotations
 * (_In_, _Out_, ...) expand to nothing. ATTR_NONNULL and ATTR_NODISCARD map
 * to the compiler's attributes for the application's own declarations; this
 * library's functions carry neither: they check their pointer arguments and
 * answer EINVAL, which a nonnull attribute would let the compiler remove.
 */

#ifndef DEMI_CC_H_
#define DEMI_CC_H_

#ifndef _MSC_VER
#ifndef _In_
#define _In_
#endif
#ifndef _In_z_
#define _In_z_
#endif
#ifndef _In_opt_
#define _In_opt_
#endif
#ifndef _Inout_
#define _Inout_
#endif
#ifndef _In_reads_
#define _In_reads_(count)
#endif
#ifndef _In_reads_bytes_
#define _In_reads_bytes_(bytes)
#endif
#ifndef _Out_
#define _Out_
#endif
#ifndef _Out_writes_to_
#define _Out_writes_to_(size, count)
#endif
#ifndef _Out_writes_to_opt_
#define _Out_writes_to_opt_(size, count)
#endif
#ifndef _Deref_pre_z_
#define _Deref_pre_z_
#endif
#endif /* !_MSC_VER */

#ifndef ATTR_NONNULL
#if defined(__GNUC__) || defined(__clang__)
#define ATTR_NONNULL(...) __attribute__((__nonnull__(__VA_ARGS__)))
#else
#define ATTR_NONNULL(...)
#endif
#endif

#ifndef ATTR_NODISCARD
#if defined(__GNUC__) || defined(__clang__)
#define ATTR_NODISCARD __attribute__((__warn_unused_result__))
#else
#define ATTR_NODISCARD
#endif
#endif

#endif /* DEMI_CC_H_ */
