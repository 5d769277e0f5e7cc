// SocketContext: what every kind of socket shares, owned by the LibOS.
//
// Stream sockets (stream_sockets.h) and datagram sockets
// (datagram_sockets.h) keep their own queues; the tokens they complete, the
// memory they push and lend, the settings and the progress engine they
// register with are the LibOS's, reached through this context. It also holds
// the one way a push ends, whatever its socket kind: FinishPush (the device
// is done, or the push failed) and CompletePushAtPost (the bytes went
// inline).
//
// Lifetime: everything referenced belongs to the worker or the LibOS and
// outlives the sockets. Thread-safety: none; every call is under the
// worker's mutex.

#ifndef DEMI_LIBOS_SOCKET_CONTEXT_H_
#define DEMI_LIBOS_SOCKET_CONTEXT_H_

#include <demi/types.h>

#include <cerrno>

#include "absl/status/status.h"
#include "common/errno_status.h"
#include "libos/options.h"
#include "libos/progress_engine.h"
#include "libos/push_memory.h"
#include "libos/receive_handles.h"
#include "libos/token_table.h"
#include "rdma/device_completions.h"
#include "rdma/device_registry.h"

namespace demi::libos {

struct SocketContext {
  // The worker these sockets belong to (the worker field of their qds).
  uint32_t worker;
  const LibOSOptions& options;
  rdma::DeviceRegistry& devices;
  // The worker's completion queues (one group per device).
  rdma::DeviceCompletions& completions;
  TokenTable& tokens;
  ReceiveHandleTable& handles;
  PushMemory& memory;
  PushTable& pushes;
  ProgressEngine& progress;

  // A push that was posted (or queued) and will be reported: its record
  // (and so its memory's pins and leases, from Map) is kept until
  // FinishPush.
  void Track(demi_qtoken_t qt, const PushRecord& record) {
    pushes.Insert(qt, record);
  }

  // The end of every tracked push, as its transport reported it (`status`):
  // its memory is released (PushMemory::Finished) and its token completes
  // with the pushed array, as PUSH or as FAILED with the errno of `status`,
  // or ECANCELED whatever the flush said when `closed` (demi_close stopped
  // it). Returns false, changing nothing, if `qt` has no record: a close
  // cancels the records of its pushes before their flushed completions
  // come back; on an open queue every reported push has one, so a
  // completion without is the libOS's bug, counted and logged
  // (TokenTable::unmatched()).
  bool FinishPush(demi_qtoken_t qt, const absl::Status& status, bool closed) {
    PushRecord* push = pushes.Find(qt);
    if (push == nullptr) {
      if (!closed) tokens.ReportUnmatched("finishing a push", qt);
      return false;
    }
    demi_qresult_t result{};
    result.qr_opcode = status.ok() ? DEMI_OPC_PUSH : DEMI_OPC_FAILED;
    result.qr_ret = status.ok() ? 0
                    : closed    ? ECANCELED
                                : ErrnoFromStatus(status);
    result.qr_value.sga = push->sga;
    memory.Finished(*push);
    pushes.Erase(qt);
    tokens.Complete(qt, result);
    return true;
  }

  // A push of `qd` sent inline without mapping before it had a token
  // (RcConnection::TrySendCopied): the memory is the application's again,
  // so its token is born done with `sga`. The caller checked
  // tokens.has_free_slot() before sending.
  demi_qtoken_t PushDoneInline(int qd, const demi_sgarray_t& sga) {
    demi_qtoken_t qt = 0;
    demi_qresult_t* result = tokens.AllocateDone(qd, DEMI_OPC_PUSH, &qt);
    if (result != nullptr) CopyArray(sga, &result->qr_value.sga);
    return qt;
  }

  // A push sent inline without mapping (RcConnection::TrySendCopied): the
  // memory is the application's again, the token completes now with `sga`.
  void CompletePushInline(demi_qtoken_t qt, const demi_sgarray_t& sga) {
    demi_qresult_t* result = tokens.CompleteInPlace(qt, DEMI_OPC_PUSH);
    if (result != nullptr) CopyArray(sga, &result->qr_value.sga);
  }

  // A push whose bytes went inline (the transport reported it done at
  // post): the memory is the application's again, the token completes now.
  void CompletePushAtPost(demi_qtoken_t qt, const PushRecord& record) {
    memory.Unmap(record);
    demi_qresult_t* result = tokens.CompleteInPlace(qt, DEMI_OPC_PUSH);
    if (result != nullptr) CopyArray(record.sga, &result->qr_value.sga);
  }
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_SOCKET_CONTEXT_H_
