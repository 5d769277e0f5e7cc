#include "tests/libos_test_util.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "tests/pattern.h"
#include "tests/rdma_env.h"

namespace demi::testing {
namespace {

uint32_t SegmentLength(uint32_t size, uint32_t segments, uint32_t s,
                       uint32_t offset) {
  return s + 1 == segments ? size - offset : size / segments;
}

// Binds `qd` to the test address at a port of NextTestAddress, stored in
// *address. Ports come from a window per process id; a test that takes
// many can reach into the window of a process run just before it whose
// ports the kernel has not released yet: it takes the next one then.
void BindTestAddress(int qd, sockaddr_in* address) {
  int bound = EADDRINUSE;
  for (int attempt = 0; attempt < 100 && bound == EADDRINUSE; ++attempt) {
    *address = NextTestAddress();
    bound = demi_bind(qd, Sa(*address), sizeof(*address));
  }
  EXPECT_EQ(bound, 0);
}

}  // namespace

demi_qresult_t WaitResult(demi_qtoken_t qt, const timespec& timeout) {
  demi_qresult_t result{};
  EXPECT_EQ(demi_wait(&result, qt, &timeout), 0);
  return result;
}

int ListenOnTestAddress(sockaddr_in* address, int backlog) {
  int qd = -1;
  EXPECT_EQ(demi_socket(&qd, AF_INET, SOCK_STREAM, 0), 0);
  BindTestAddress(qd, address);
  EXPECT_EQ(demi_listen(qd, backlog), 0);
  return qd;
}

void ConnectPair(int* client, int* server, int* listener) {
  sockaddr_in address;
  *listener = ListenOnTestAddress(&address);
  ConnectTo(address, *listener, client, server);
}

void Connect(const sockaddr_in& address, int* client) {
  demi_qtoken_t connect_qt = 0;
  ASSERT_EQ(demi_socket(client, AF_INET, SOCK_STREAM, 0), 0);
  ASSERT_EQ(demi_connect(&connect_qt, *client,
                         reinterpret_cast<const sockaddr*>(&address),
                         sizeof(address)),
            0);
  demi_qresult_t connected = WaitResult(connect_qt);
  ASSERT_EQ(connected.qr_opcode, DEMI_OPC_CONNECT) << connected.qr_ret;
}

void ConnectTo(const sockaddr_in& address, int listener, int* client,
               int* server) {
  demi_qtoken_t accept_qt = 0;
  ASSERT_EQ(demi_accept(&accept_qt, listener), 0);
  ASSERT_NO_FATAL_FAILURE(Connect(address, client));
  demi_qresult_t accepted = WaitResult(accept_qt);
  ASSERT_EQ(accepted.qr_opcode, DEMI_OPC_ACCEPT) << accepted.qr_ret;
  *server = accepted.qr_value.ares.qd;
  EXPECT_EQ(accepted.qr_value.ares.addr.sin_addr.s_addr,
            address.sin_addr.s_addr);
}

demi_qtoken_t PushMessage(int qd, uint64_t index, uint32_t size,
                          uint32_t segments) {
  demi_sgarray_t sga = demi_sgaalloc(size);
  if (sga.sga_numsegs != 1) {
    ADD_FAILURE() << "demi_sgaalloc(" << size << ") failed";
    return 0;
  }
  auto* data = static_cast<uint8_t*>(sga.sga_segs[0].sgaseg_buf);
  FillPattern(data, size, index);
  if (segments > size) segments = size;
  sga.sga_numsegs = segments;
  uint32_t offset = 0;
  for (uint32_t s = 0; s < segments; ++s) {
    sga.sga_segs[s].sgaseg_buf = data + offset;
    sga.sga_segs[s].sgaseg_len = SegmentLength(size, segments, s, offset);
    offset += sga.sga_segs[s].sgaseg_len;
  }
  demi_qtoken_t qt = 0;
  EXPECT_EQ(demi_push(&qt, qd, &sga), 0);
  return qt;
}

void CloseQueues(std::initializer_list<int> qds) {
  for (int qd : qds) EXPECT_EQ(demi_close(qd), 0) << "queue " << qd;
}

std::vector<demi_qtoken_t> PushUntilEagain(int qd, uint32_t size) {
  std::vector<demi_qtoken_t> pushes;
  while (pushes.size() < 10000) {
    demi_sgarray_t sga = demi_sgaalloc(size);
    if (sga.sga_numsegs != 1) {
      ADD_FAILURE() << "demi_sgaalloc(" << size << ") failed";
      break;
    }
    std::memset(sga.sga_segs[0].sgaseg_buf, 0, size);
    demi_qtoken_t qt = 0;
    int rc = demi_push(&qt, qd, &sga);
    if (rc != 0) {
      EXPECT_EQ(rc, EAGAIN);
      EXPECT_EQ(demi_sgafree(&sga), 0);
      return pushes;
    }
    pushes.push_back(qt);
  }
  ADD_FAILURE() << "pushes never stalled";
  return pushes;
}

int BoundDatagramSocket(sockaddr_in* address) {
  int qd = -1;
  EXPECT_EQ(demi_socket(&qd, AF_INET, SOCK_DGRAM, 0), 0);
  BindTestAddress(qd, address);
  return qd;
}

uint64_t ExpectPatternIn(const demi_sgarray_t& sga, uint64_t seed) {
  uint64_t offset = 0;
  for (uint32_t s = 0; s < sga.sga_numsegs && s < DEMI_SGARRAY_MAXSIZE; ++s) {
    const int64_t bad = FindPatternMismatch(
        sga.sga_segs[s].sgaseg_buf, sga.sga_segs[s].sgaseg_len, seed, offset);
    if (bad >= 0) {
      ADD_FAILURE() << "message " << seed << " byte " << offset + bad;
    }
    offset += sga.sga_segs[s].sgaseg_len;
  }
  return offset;
}

void CompletePush(demi_qtoken_t qt) {
  demi_qresult_t result = WaitResult(qt);
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_PUSH) << result.qr_ret;
  EXPECT_EQ(demi_sgafree(&result.qr_value.sga), 0);
}

uint64_t CheckMessage(demi_qresult_t& result, uint64_t index, uint32_t size,
                      uint32_t segments) {
  EXPECT_EQ(result.qr_opcode, DEMI_OPC_POP) << result.qr_ret;
  if (result.qr_opcode != DEMI_OPC_POP) return 0;
  demi_sgarray_t& sga = result.qr_value.sga;
  if (segments > size) segments = size;
  EXPECT_EQ(sga.sga_numsegs, segments);
  uint32_t offset = 0;
  for (uint32_t s = 0; s < sga.sga_numsegs && s < segments; ++s) {
    EXPECT_EQ(sga.sga_segs[s].sgaseg_len,
              SegmentLength(size, segments, s, offset));
    offset += sga.sga_segs[s].sgaseg_len;
  }
  const uint64_t checked = ExpectPatternIn(sga, index);
  EXPECT_EQ(demi_sgafree(&sga), 0);
  return checked;
}

}  // namespace demi::testing
