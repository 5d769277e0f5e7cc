// Receive handles: what sga_buf of a popped array points to.
//
// Every queue that pops messages (a stream connection, a datagram socket) is
// a ReceiveBufferOwner with one ReceiveHandle per receive buffer. A pop hands
// the application a pointer to the handle of the buffer the message lies in;
// demi_sgafree and demi_push of that array find the handle again through the
// one ReceiveHandleTable of the LibOS, whatever kind of queue owns it.
//
// A handle goes through: free (the buffer is the device's) -> popped (the
// application's, after a pop) -> back to free by demi_sgafree, or, when a
// push still reads the buffer, to free_pending until the last such push
// completes (free protection). Only then is the buffer given back to its
// owner (re-posted, a credit returned to the peer).
//
// Thread-safety: none; the LibOS mutex guards all of it.

#ifndef DEMI_LIBOS_RECEIVE_HANDLES_H_
#define DEMI_LIBOS_RECEIVE_HANDLES_H_

#include <cstdint>
#include <memory>

#include "absl/container/btree_map.h"
#include "rdma/rc_connection.h"  // RegisteredSpan

namespace demi::libos {

// A queue whose receive buffers are lent to the application by pops.
class ReceiveBufferOwner {
 public:
  // The registered memory of buffer `index` while it is lent out (every
  // segment of the popped message lies in it); empty if it is not.
  virtual rdma::RegisteredSpan HeldBuffer(uint32_t index) const = 0;
  // The application and every push are done with buffer `index`: give it
  // back to the device. Called once per pop.
  virtual void ReturnBuffer(uint32_t index) = 0;

 protected:
  ~ReceiveBufferOwner() = default;
};

struct ReceiveHandle {
  ReceiveBufferOwner* owner = nullptr;
  uint32_t buffer_index = 0;
  uint32_t pushes = 0;        // pushes in flight that read the buffer
  bool popped = false;        // lent to the application, not yet freed
  bool free_pending = false;  // freed while pushes read it
};

// Every queue's handles, found by address.
class ReceiveHandleTable {
 public:
  // A new array of `count` handles (indices 0..count-1) for `owner`; owned
  // by the table, valid until Remove().
  ReceiveHandle* Add(ReceiveBufferOwner& owner, uint32_t count);
  // Forgets (and frees) an array Add() returned; null is ignored.
  void Remove(ReceiveHandle* handles);
  // The live handle `pointer` points to, or null if it points to none (it
  // is never dereferenced unless it is one).
  ReceiveHandle* Find(const void* pointer) const;

 private:
  struct Array {
    uintptr_t end = 0;
    std::unique_ptr<ReceiveHandle[]> handles;
  };
  absl::btree_map<uintptr_t, Array> arrays_;  // by start address
};

}  // namespace demi::libos

#endif  // DEMI_LIBOS_RECEIVE_HANDLES_H_
