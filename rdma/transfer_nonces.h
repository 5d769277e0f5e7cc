// Unpredictable 16-bit nonces for rendezvous transfer ids.
//
// A rendezvous transfer's id (wire::MessageHeader::transfer_id) is its slot
// index in the low 16 bits and a nonce in the high 16. The peer learns an
// id only from the announcement; a done whose id does not match a transfer
// announced on its connection fails that connection (EPROTO). The nonce is
// what makes an id a peer has not been told, or one of an earlier transfer
// in the same slot, wrong: drawn from the kernel's random source
// (getrandom), never 0, so no counter or earlier id predicts it.
//
// Nonces are drawn 128 at a time: one system call per 128 rendezvous
// transfers. Not thread-safe (each connection has its own, under its lock).

#ifndef DEMI_RDMA_TRANSFER_NONCES_H_
#define DEMI_RDMA_TRANSFER_NONCES_H_

#include <cstddef>
#include <cstdint>

namespace demi::rdma {

class TransferNonces {
 public:
  TransferNonces() = default;
  TransferNonces(const TransferNonces&) = delete;
  TransferNonces& operator=(const TransferNonces&) = delete;

  // The next nonce: 1 to 65535.
  uint16_t Next() {
    for (;;) {
      if (next_ == kCount) Refill();
      const uint16_t nonce = nonces_[next_++];
      if (nonce != 0) return nonce;
    }
  }

 private:
  static constexpr size_t kCount = 128;
  // Fills nonces_ from getrandom(); if the kernel refuses (it never should
  // once booted), from the time-stamp counter mixed with a counter, and
  // logs it once.
  void Refill();

  uint16_t nonces_[kCount];
  size_t next_ = kCount;
};

}  // namespace demi::rdma

#endif  // DEMI_RDMA_TRANSFER_NONCES_H_
