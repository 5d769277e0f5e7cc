#include "rdma/wire.h"

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace demi::rdma::wire {
namespace {

// Layout of ConnectionParams (16 bytes):
//   0: version  1: flags (bit 0: rendezvous accepted)  2-3: receive_buffers
//   4-7: receive_buffer_size  8-15: rendezvous_quota
// Layout of the header's fixed part (8 bytes):
//   0: version  1: type  2-3: credits_returned  4: num_segments  5-7: reserved

absl::Status ProtocolError(absl::string_view what) {
  return ErrnoError(EPROTO, absl::StrCat("wire protocol: ", what));
}

}  // namespace

void EncodeConnectionParams(const ConnectionParams& params,
                            uint8_t out[kConnectionParamsSize]) {
  out[0] = kVersion;
  out[1] = params.rendezvous ? 1 : 0;
  Put16(out + 2, params.receive_buffers);
  Put32(out + 4, params.receive_buffer_size);
  Put64(out + 8, params.rendezvous ? params.rendezvous_quota : 0);
}

absl::StatusOr<ConnectionParams> DecodeConnectionParams(const void* data,
                                                        size_t length) {
  // rdma_cm may pad private data with zeros, so longer is fine.
  if (data == nullptr || length < kConnectionParamsSize) {
    return ProtocolError(absl::StrCat("connection parameters of ", length,
                                      " bytes, need ", kConnectionParamsSize));
  }
  const uint8_t* in = static_cast<const uint8_t*>(data);
  if (in[0] != kVersion) {
    return ProtocolError(absl::StrCat("peer speaks version ", in[0],
                                      ", this library ", kVersion));
  }
  ConnectionParams params;
  params.rendezvous = (in[1] & 1) != 0;
  params.receive_buffers = Get16(in + 2);
  params.receive_buffer_size = Get32(in + 4);
  params.rendezvous_quota = Get64(in + 8);
  if (params.receive_buffers == 0 ||
      params.receive_buffer_size < kMaxHeaderSize) {
    return ProtocolError("peer offers no usable receive buffers");
  }
  if (params.rendezvous != (params.rendezvous_quota != 0)) {
    return ProtocolError(
        "peer's rendezvous flag and quota disagree (a quota is set exactly "
        "when rendezvous messages are taken)");
  }
  return params;
}

size_t EncodedSize(const MessageHeader& header) {
  switch (header.type) {
    case MessageType::kData:
    case MessageType::kFragmented:
      return HeaderSize(header.num_segments);
    case MessageType::kRendezvous:
      return RendezvousSize(header.num_segments);
    case MessageType::kRendezvousDone:
      return kRendezvousDoneSize;
    default:
      return kHeaderFixedSize;
  }
}

size_t EncodeHeader(const MessageHeader& header, uint8_t out[kMaxEncodedSize]) {
  EncodeFixedPart(header.type, header.credits_returned, header.num_segments,
                  out);
  // (A batch's count is no segment table: its entries follow.)
  const int lengths =
      header.type == MessageType::kBatch ? 0 : header.num_segments;
  for (int i = 0; i < lengths; ++i) {
    Put32(out + kHeaderFixedSize + 4 * i, header.segment_lengths[i]);
  }
  if (header.type == MessageType::kRendezvous ||
      header.type == MessageType::kRendezvousDone) {
    uint8_t* block = out + HeaderSize(header.num_segments);
    Put32(block, header.transfer_id);
    Put32(block + 4, 0);
    for (int i = 0; i < header.num_segments; ++i) {
      uint8_t* remote = block + 8 + kRemoteSegmentSize * i;
      Put64(remote, header.remote[i].address);
      Put32(remote + 8, header.remote[i].rkey);
      Put32(remote + 12, 0);
    }
  }
  return EncodedSize(header);
}

absl::Status DecodeHeader(const uint8_t* message, size_t message_length,
                          MessageHeader* out) {
  if (message_length < kHeaderFixedSize) {
    return ProtocolError(
        absl::StrCat("message of ", message_length, " bytes has no header"));
  }
  if (message[0] != kVersion) {
    return ProtocolError(absl::StrCat("message version ", message[0]));
  }
  if ((Get32(message + 4) & 0xffffff00u) != 0) {  // bytes 5-7, one load
    return ProtocolError("reserved header bytes set");
  }
  MessageHeader& header = *out;
  uint8_t type = message[1];
  if (type < static_cast<uint8_t>(MessageType::kData) ||
      type > static_cast<uint8_t>(MessageType::kFragment)) {
    return ProtocolError(absl::StrCat("unknown message type ", type));
  }
  header.type = static_cast<MessageType>(type);
  header.credits_returned = Get16(message + 2);
  header.num_segments = message[4];
  if (header.type == MessageType::kBatch) {
    // The entries are decoded one by one (DecodeBatchEntry); each takes at
    // least a fixed part and one byte.
    if (header.num_segments < 2 || header.num_segments > kMaxBatchMessages ||
        message_length - kHeaderFixedSize <
            header.num_segments * (HeaderSize(1) + 1)) {
      return ProtocolError(absl::StrCat("batch of ", header.num_segments,
                                        " messages in ", message_length,
                                        " bytes"));
    }
    return absl::OkStatus();
  }
  if (header.num_segments > kMaxSegments) {
    return ProtocolError(
        absl::StrCat(header.num_segments, " segments in one message"));
  }
  const bool has_segments = header.type == MessageType::kData ||
                            header.type == MessageType::kRendezvous ||
                            header.type == MessageType::kFragmented;
  if (has_segments != (header.num_segments > 0)) {
    return ProtocolError("segments on a control message, or none on data");
  }
  size_t header_size = HeaderSize(header.num_segments);
  if (message_length < header_size) {
    return ProtocolError("message shorter than its segment table");
  }
  uint64_t payload = 0;
  for (int i = 0; i < header.num_segments; ++i) {
    header.segment_lengths[i] = Get32(message + kHeaderFixedSize + 4 * i);
    payload += header.segment_lengths[i];
  }
  if (header.type == MessageType::kFragmented) {
    const size_t part = message_length - header_size;
    if (part == 0 || part >= payload) {
      return ProtocolError(absl::StrCat("first part of ", part,
                                        " bytes of a message of ", payload));
    }
    return absl::OkStatus();
  }
  if (header.type == MessageType::kFragment) {
    if (message_length == kHeaderFixedSize) {
      return ProtocolError("empty part of a message");
    }
    return absl::OkStatus();
  }
  if (header.type == MessageType::kData) {
    if (header_size + payload != message_length) {
      return ProtocolError(absl::StrCat("segments hold ", payload,
                                        " bytes but the message carries ",
                                        message_length - header_size));
    }
    return absl::OkStatus();
  }
  if (message_length != EncodedSize(header)) {
    return ProtocolError(absl::StrCat("message type ", type, " of ",
                                      message_length, " bytes, expected ",
                                      EncodedSize(header)));
  }
  if (header.type == MessageType::kRendezvous ||
      header.type == MessageType::kRendezvousDone) {
    const uint8_t* block = message + header_size;
    header.transfer_id = Get32(block);
    if (Get32(block + 4) != 0) {
      return ProtocolError("reserved rendezvous bytes set");
    }
    for (int i = 0; i < header.num_segments; ++i) {
      const uint8_t* remote = block + 8 + kRemoteSegmentSize * i;
      header.remote[i].address = Get64(remote);
      header.remote[i].rkey = Get32(remote + 8);
      if (header.segment_lengths[i] == 0) {
        return ProtocolError("empty rendezvous segment");
      }
      if (Get32(remote + 12) != 0) {
        return ProtocolError("reserved rendezvous bytes set");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeBatchEntry(const uint8_t* entry, size_t remaining,
                              MessageHeader* header, size_t* entry_size) {
  if (remaining < HeaderSize(1)) {
    return ProtocolError("batch entry shorter than a header");
  }
  if (entry[0] != kVersion ||
      entry[1] != static_cast<uint8_t>(MessageType::kData) ||
      Get16(entry + 2) != 0 || entry[5] != 0 || entry[6] != 0 ||
      entry[7] != 0) {
    return ProtocolError(
        "batch entry is not a data message without credits (or has "
        "reserved bytes set)");
  }
  const uint8_t segments = entry[4];
  if (segments < 1 || segments > kMaxSegments ||
      HeaderSize(segments) > remaining) {
    return ProtocolError(
        absl::StrCat("batch entry of ", segments, " segments does not fit"));
  }
  header->type = MessageType::kData;
  header->credits_returned = 0;
  header->num_segments = segments;
  uint64_t size = HeaderSize(segments);
  for (int i = 0; i < segments; ++i) {
    header->segment_lengths[i] = Get32(entry + kHeaderFixedSize + 4 * i);
    size += header->segment_lengths[i];
  }
  if (size > remaining) {
    return ProtocolError(absl::StrCat("batch entry of ", size, " bytes, only ",
                                      remaining, " left"));
  }
  *entry_size = static_cast<size_t>(size);
  return absl::OkStatus();
}

}  // namespace demi::rdma::wire
