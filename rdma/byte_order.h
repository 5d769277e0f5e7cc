// Little-endian fields at any alignment: how both wire formats (wire.h,
// datagram_wire.h) lay out their integers.

#ifndef DEMI_RDMA_BYTE_ORDER_H_
#define DEMI_RDMA_BYTE_ORDER_H_

#include <endian.h>

#include <cstdint>
#include <cstring>

namespace demi::rdma {

inline void Put16(uint8_t* out, uint16_t value) {
  value = htole16(value);
  std::memcpy(out, &value, sizeof(value));
}
inline void Put32(uint8_t* out, uint32_t value) {
  value = htole32(value);
  std::memcpy(out, &value, sizeof(value));
}
inline void Put64(uint8_t* out, uint64_t value) {
  value = htole64(value);
  std::memcpy(out, &value, sizeof(value));
}
inline uint16_t Get16(const uint8_t* in) {
  uint16_t value;
  std::memcpy(&value, in, sizeof(value));
  return le16toh(value);
}
inline uint32_t Get32(const uint8_t* in) {
  uint32_t value;
  std::memcpy(&value, in, sizeof(value));
  return le32toh(value);
}
inline uint64_t Get64(const uint8_t* in) {
  uint64_t value;
  std::memcpy(&value, in, sizeof(value));
  return le64toh(value);
}

}  // namespace demi::rdma

#endif  // DEMI_RDMA_BYTE_ORDER_H_
