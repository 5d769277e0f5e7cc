// Helpers shared by the demi_* integration tests: connecting a pair and
// pushing/checking messages with a pattern derived from their index.

#ifndef DEMI_TESTS_LIBOS_TEST_UTIL_H_
#define DEMI_TESTS_LIBOS_TEST_UTIL_H_

#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>

#include <cstdint>
#include <initializer_list>
#include <vector>

namespace demi::testing {

inline constexpr timespec kTenSeconds = {10, 0};

inline constexpr timespec kZero = {0, 0};

// Waits up to `timeout` for `qt` and returns its result (a test failure if
// it does not complete).
demi_qresult_t WaitResult(demi_qtoken_t qt,
                          const timespec& timeout = kTenSeconds);

// A listening socket on the test address with a port of its own.
int ListenOnTestAddress(sockaddr_in* address, int backlog = 128);

// Connects a client to a new listener: {client, server, listener} qds.
void ConnectPair(int* client, int* server, int* listener);
// Connects a new client to `address` and waits for the connection: the
// client's qd in *client (a test failure if it does not connect).
void Connect(const sockaddr_in& address, int* client);
// Connects a new client to `listener` (listening on `address`) and accepts
// it: {client, server} qds.
void ConnectTo(const sockaddr_in& address, int listener, int* client,
               int* server);

// Pushes message `index` of `size` bytes split in `segments` segments of one
// demi_sgaalloc buffer; returns the push token (0 on failure).
demi_qtoken_t PushMessage(int qd, uint64_t index, uint32_t size,
                          uint32_t segments);

// A datagram socket bound to a test address of its own (*address).
int BoundDatagramSocket(sockaddr_in* address);

// `address` as the sockaddr* the demi_* calls take.
inline const sockaddr* Sa(const sockaddr_in& address) {
  return reinterpret_cast<const sockaddr*>(&address);
}

// Checks that the segments of `sga`, in order, hold bytes [0, n) of the
// pattern of `seed` (tests/pattern.h), adding a failure at the first byte
// that does not; returns n, the bytes the segments hold.
uint64_t ExpectPatternIn(const demi_sgarray_t& sga, uint64_t seed);

// Closes each queue, expecting success.
void CloseQueues(std::initializer_list<int> qds);

// Pushes `size`-byte messages (zeros) until demi_push says EAGAIN (the peer
// does not pop); returns their tokens. Fails the test past 10000 pushes.
std::vector<demi_qtoken_t> PushUntilEagain(int qd, uint32_t size);

// Waits for a push, checks it succeeded and frees its array.
void CompletePush(demi_qtoken_t qt);

// Checks a popped result against PushMessage's layout, frees it, and returns
// the bytes checked.
uint64_t CheckMessage(demi_qresult_t& result, uint64_t index, uint32_t size,
                      uint32_t segments);

}  // namespace demi::testing

#endif  // DEMI_TESTS_LIBOS_TEST_UTIL_H_
