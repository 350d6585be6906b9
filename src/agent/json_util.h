// Exception-free accessors for JSON request and reply fields.
//
// nlohmann::json throws on a type mismatch; control payloads come from the
// network, so every field is read through these helpers, which return the
// default for a missing field and an InvalidArgument for a field of the wrong
// type (the Required* forms also for a missing one).
#ifndef ESCDR_AGENT_JSON_UTIL_H_
#define ESCDR_AGENT_JSON_UTIL_H_

#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "escdr/base/status.h"

namespace escdr::agent {

inline Result<std::string> JsonString(const nlohmann::json& j, std::string_view key,
                                      std::string fallback = "") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) {
    return Err(Status::InvalidArgument(fmt::format("field \"{}\" must be a string", key)));
  }
  return it->get<std::string>();
}

inline Result<std::string> RequiredJsonString(const nlohmann::json& j, std::string_view key) {
  ESCDR_ASSIGN_OR_RETURN(std::string s, JsonString(j, key));
  if (s.empty()) return Err(Status::InvalidArgument(fmt::format("field \"{}\" is required", key)));
  return s;
}

inline Result<std::uint64_t> JsonU64(const nlohmann::json& j, std::string_view key,
                                     std::uint64_t fallback = 0) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<std::int64_t>() >= 0)) {
    return Err(Status::InvalidArgument(
        fmt::format("field \"{}\" must be a non-negative integer", key)));
  }
  return it->get<std::uint64_t>();
}

inline Result<std::int64_t> JsonI64(const nlohmann::json& j, std::string_view key,
                                    std::int64_t fallback = 0) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) {
    return Err(Status::InvalidArgument(fmt::format("field \"{}\" must be an integer", key)));
  }
  return it->get<std::int64_t>();
}

inline Result<bool> JsonBool(const nlohmann::json& j, std::string_view key, bool fallback = false) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return Err(Status::InvalidArgument(fmt::format("field \"{}\" must be true or false", key)));
  }
  return it->get<bool>();
}

// The field as a string for messages and tables: "" if absent or not a string.
inline std::string StringOr(const nlohmann::json& j, std::string_view key,
                            std::string fallback = "") {
  auto it = j.find(key);
  return (it != j.end() && it->is_string()) ? it->get<std::string>() : fallback;
}

inline std::uint64_t U64Or(const nlohmann::json& j, std::string_view key, std::uint64_t fallback = 0) {
  auto it = j.find(key);
  return (it != j.end() && it->is_number_unsigned()) ? it->get<std::uint64_t>()
         : (it != j.end() && it->is_number_integer() && it->get<std::int64_t>() >= 0)
             ? static_cast<std::uint64_t>(it->get<std::int64_t>())
             : fallback;
}

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_JSON_UTIL_H_
