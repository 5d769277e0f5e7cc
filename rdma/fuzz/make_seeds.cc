// Writes the seed corpus of the fuzz targets (rdma/fuzz/corpus/TARGET/):
// well-formed messages of every kind, encoded by the library's own
// encoders, and a few near misses. Run by `tools/fuzz --make-seeds`; the
// files are kept in the repository.
//
// usage: make_seeds DIR   (writes DIR/wire_header/..., DIR/... )

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "rdma/datagram_wire.h"
#include "rdma/wire.h"

namespace wire = demi::rdma::wire;
namespace dw = demi::rdma::datagram_wire;

namespace {

std::filesystem::path root;

void Write(const std::string& target, const std::string& name,
           const std::vector<uint8_t>& bytes) {
  const std::filesystem::path dir = root / target;
  std::filesystem::create_directories(dir);
  std::ofstream file(dir / name, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

// A message: its header, then `payload` bytes of a pattern.
std::vector<uint8_t> Message(const wire::MessageHeader& header,
                             size_t payload) {
  uint8_t encoded[wire::kMaxEncodedSize];
  const size_t size = wire::EncodeHeader(header, encoded);
  std::vector<uint8_t> bytes(encoded, encoded + size);
  for (size_t i = 0; i < payload; ++i) bytes.push_back(static_cast<uint8_t>(i));
  return bytes;
}

wire::MessageHeader Data(std::vector<uint32_t> lengths) {
  wire::MessageHeader header{};
  header.type = wire::MessageType::kData;
  header.credits_returned = 3;
  header.num_segments = static_cast<uint8_t>(lengths.size());
  for (size_t i = 0; i < lengths.size(); ++i) {
    header.segment_lengths[i] = lengths[i];
  }
  return header;
}

void WireHeaderSeeds() {
  Write("wire_header", "data_64", Message(Data({64}), 64));
  Write("wire_header", "data_3_segments", Message(Data({1, 20, 300}), 321));
  wire::MessageHeader rendezvous = Data({70000, 9000});
  rendezvous.type = wire::MessageType::kRendezvous;
  rendezvous.transfer_id = 0x00010002;
  rendezvous.remote[0] = {0x7f0000001000, 0x1234};
  rendezvous.remote[1] = {0x7f0000100000, 0x5678};
  Write("wire_header", "rendezvous_2", Message(rendezvous, 0));
  wire::MessageHeader done{};
  done.type = wire::MessageType::kRendezvousDone;
  done.transfer_id = 0x00010002;
  Write("wire_header", "done", Message(done, 0));
  wire::MessageHeader update{};
  update.type = wire::MessageType::kCreditUpdate;
  update.credits_returned = 16;
  Write("wire_header", "credit_update", Message(update, 0));
  wire::MessageHeader end{};
  end.type = wire::MessageType::kEndOfStream;
  Write("wire_header", "end_of_stream", Message(end, 0));
  // A batch of three: the fixed part with the count, then three data
  // messages as their own SENDs would carry them (no credits).
  wire::MessageHeader batch{};
  batch.type = wire::MessageType::kBatch;
  batch.num_segments = 3;
  std::vector<uint8_t> bytes = Message(batch, 0);
  for (uint32_t n : {8u, 1u, 100u}) {
    wire::MessageHeader entry = Data({n});
    entry.credits_returned = 0;
    std::vector<uint8_t> one = Message(entry, n);
    bytes.insert(bytes.end(), one.begin(), one.end());
  }
  Write("wire_header", "batch_3", bytes);
  // A message of 10000 + 500 bytes in parts: the first (3000 bytes of it)
  // and a next one.
  wire::MessageHeader first = Data({10000, 500});
  first.type = wire::MessageType::kFragmented;
  Write("wire_header", "first_part", Message(first, 3000));
  wire::MessageHeader next{};
  next.type = wire::MessageType::kFragment;
  next.credits_returned = 2;
  Write("wire_header", "next_part", Message(next, 4000));
  std::vector<uint8_t> old = Message(Data({4}), 4);
  old[0] = wire::kVersion - 1;
  Write("wire_header", "old_version", old);
}

void ConnectionParamsSeeds() {
  uint8_t out[wire::kConnectionParamsSize];
  wire::EncodeConnectionParams({.receive_buffers = 64,
                                .receive_buffer_size = 8192 + 72,
                                .rendezvous = true,
                                .rendezvous_quota = uint64_t{1} << 30},
                               out);
  Write("connection_params", "rendezvous", {out, out + sizeof(out)});
  wire::EncodeConnectionParams(
      {.receive_buffers = 3, .receive_buffer_size = 72, .rendezvous = false},
      out);
  std::vector<uint8_t> padded(out, out + sizeof(out));
  padded.resize(56, 0);  // rdma_cm pads a connect request's private data
  Write("connection_params", "smallest_padded", padded);
  Write("connection_params", "short", {out, out + 5});
}

void DatagramHeaderSeeds() {
  for (int segments : {1, 3}) {
    dw::DatagramHeader header;
    header.num_segments = static_cast<uint8_t>(segments);
    header.source_ipv4 = 0x01004d0a;  // 10.77.0.1, network order
    header.source_port = 7200;
    size_t payload = 0;
    for (int i = 0; i < segments; ++i) {
      header.segment_lengths[i] = static_cast<uint32_t>(16 * (i + 1));
      payload += header.segment_lengths[i];
    }
    uint8_t out[dw::kMaxHeaderSize];
    const size_t size = dw::EncodeHeader(header, out);
    std::vector<uint8_t> bytes(out, out + size);
    bytes.resize(size + payload, 0x5a);
    Write("datagram_header", "segments_" + std::to_string(segments), bytes);
  }
}

void CreditAccountSeeds() {
  // Two receive counts, then steps: bit 0 picks the side, the next three
  // bits what it does (see credit_account_fuzzer.cc).
  std::vector<uint8_t> steady = {0, 5};
  for (int i = 0; i < 40; ++i) {
    for (uint8_t step : {0x00, 0x06, 0x0d, 0x02, 0x07, 0x0c, 0x05}) {
      steady.push_back(step);
    }
  }
  Write("credit_account", "steady", steady);
  std::vector<uint8_t> one_way = {9, 0};
  for (int i = 0; i < 60; ++i) {
    for (uint8_t step : {0x00, 0x06, 0x0b, 0x05}) one_way.push_back(step);
  }
  Write("credit_account", "one_way", one_way);
  Write("credit_account", "forged", {3, 3, 0x00, 0x06, 0x0f, 0xff, 0xff});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  root = argv[1];
  WireHeaderSeeds();
  ConnectionParamsSeeds();
  DatagramHeaderSeeds();
  CreditAccountSeeds();
  return 0;
}
