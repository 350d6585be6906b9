#include "escdr/wire/coding.h"

#include <fmt/format.h>

namespace escdr::wire {

void PutString16(std::vector<std::uint8_t>* out, std::string_view s) {
  PutFixed16(out, static_cast<std::uint16_t>(s.size()));
  out->insert(out->end(), s.begin(), s.end());
}

Result<const std::uint8_t*> ByteReader::Take(std::size_t n, std::string_view field) {
  if (n > bytes_.size() - pos_) {
    pos_ = bytes_.size();
    return Err(Status::ProtocolError(
        fmt::format("{} of {} bytes is too short for field {} ({} bytes needed)", what_,
                    bytes_.size(), field, n)));
  }
  const std::uint8_t* p = bytes_.data() + pos_;
  pos_ += n;
  return p;
}

Result<std::uint8_t> ByteReader::GetFixed8(std::string_view field) {
  ESCDR_ASSIGN_OR_RETURN(const std::uint8_t* p, Take(1, field));
  return *p;
}
Result<std::uint16_t> ByteReader::GetFixed16(std::string_view field) {
  ESCDR_ASSIGN_OR_RETURN(const std::uint8_t* p, Take(2, field));
  return LoadFixed16(p);
}
Result<std::uint32_t> ByteReader::GetFixed32(std::string_view field) {
  ESCDR_ASSIGN_OR_RETURN(const std::uint8_t* p, Take(4, field));
  return LoadFixed32(p);
}
Result<std::uint64_t> ByteReader::GetFixed64(std::string_view field) {
  ESCDR_ASSIGN_OR_RETURN(const std::uint8_t* p, Take(8, field));
  return LoadFixed64(p);
}
Result<std::span<const std::uint8_t>> ByteReader::GetBytes(std::size_t n, std::string_view field) {
  ESCDR_ASSIGN_OR_RETURN(const std::uint8_t* p, Take(n, field));
  return std::span<const std::uint8_t>(p, n);
}

Result<std::string> ByteReader::GetString16(std::string_view field, std::size_t min_length,
                                            std::size_t max_length) {
  ESCDR_ASSIGN_OR_RETURN(std::uint16_t len, GetFixed16(field));
  if (len < min_length || len > max_length) {
    return Err(Status::ProtocolError(fmt::format("{}: field {} has {} bytes, allowed {}..{}",
                                                 what_, field, len, min_length, max_length)));
  }
  ESCDR_ASSIGN_OR_RETURN(const std::uint8_t* p, Take(len, field));
  return std::string(reinterpret_cast<const char*>(p), len);
}

std::span<const std::uint8_t> ByteReader::Rest() {
  auto rest = bytes_.subspan(pos_);
  pos_ = bytes_.size();
  return rest;
}

Status ByteReader::ExpectEnd() const {
  if (pos_ == bytes_.size()) return Status::OK();
  return Status::ProtocolError(fmt::format("{} of {} bytes has {} unexpected trailing bytes",
                                           what_, bytes_.size(), bytes_.size() - pos_));
}

}  // namespace escdr::wire
