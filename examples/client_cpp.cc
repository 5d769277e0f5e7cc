// The echo client again, in C++ (C++17): the C API needs no wrapper, but a
// small one makes ownership plain. Sends a few strings to the server of
// server.c, checks each echo, and exits 0 ("client_cpp: N echoes checked").

#include <arpa/inet.h>
#include <demi/libos.h>
#include <demi/sga.h>
#include <demi/wait.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// Throws if a demi_* call did not return 0.
void Must(int error, const char* what) {
  if (error != 0) {
    throw std::runtime_error(std::string(what) + ": " + std::strerror(error));
  }
}

// Waits for `qt`; throws unless it completed with `opcode`.
demi_qresult_t WaitFor(demi_qtoken_t qt, demi_opcode_t opcode) {
  demi_qresult_t qr{};
  Must(demi_wait(&qr, qt, nullptr), "demi_wait");
  if (qr.qr_opcode != opcode) {
    throw std::runtime_error(std::string("operation failed: ") +
                             std::strerror(qr.qr_ret));
  }
  return qr;
}

// A connected queue, closed when it goes.
class Connection {
 public:
  explicit Connection(const sockaddr_in& server) {
    Must(demi_socket(&qd_, AF_INET, SOCK_STREAM, 0), "demi_socket");
    demi_qtoken_t qt = 0;
    Must(demi_connect(&qt, qd_, reinterpret_cast<const sockaddr*>(&server),
                      sizeof(server)),
         "demi_connect");
    WaitFor(qt, DEMI_OPC_CONNECT);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { demi_close(qd_); }

  // Sends `text` (copied into library memory) and returns the echo.
  std::string Echo(const std::string& text) {
    demi_sgarray_t sga = demi_sgaalloc(text.size());
    if (sga.sga_numsegs == 0) throw std::runtime_error("demi_sgaalloc");
    std::memcpy(sga.sga_segs[0].sgaseg_buf, text.data(), text.size());
    demi_qtoken_t qt = 0;
    Must(demi_push(&qt, qd_, &sga), "demi_push");
    WaitFor(qt, DEMI_OPC_PUSH);
    Must(demi_sgafree(&sga), "demi_sgafree");
    Must(demi_pop(&qt, qd_), "demi_pop");
    demi_qresult_t qr = WaitFor(qt, DEMI_OPC_POP);
    std::string echo;
    for (uint32_t s = 0; s < qr.qr_value.sga.sga_numsegs; ++s) {
      const demi_sgaseg_t& segment = qr.qr_value.sga.sga_segs[s];
      echo.append(static_cast<const char*>(segment.sgaseg_buf),
                  segment.sgaseg_len);
    }
    Must(demi_sgafree(&qr.qr_value.sga), "demi_sgafree");
    return echo;
  }

 private:
  int qd_ = -1;
};

}  // namespace

int main(int argc, char* argv[]) {
  sockaddr_in server{};
  server.sin_family = AF_INET;
  if (argc != 3 || inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) {
    std::cerr << "usage: client_cpp ADDRESS PORT\n";
    return 2;
  }
  server.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[2])));
  try {
    Must(demi_init(nullptr), "demi_init");
    Connection connection(server);
    const std::vector<std::string> texts = {"hello", std::string(5000, 'x'),
                                            std::string(100000, 'y')};
    for (const std::string& text : texts) {
      if (connection.Echo(text) != text) {
        std::cerr << "client_cpp: an echo of " << text.size()
                  << " bytes differs\n";
        return 1;
      }
    }
    std::cout << "client_cpp: " << texts.size() << " echoes checked\n";
  } catch (const std::exception& e) {
    std::cerr << "client_cpp: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
