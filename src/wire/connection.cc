#include "escdr/wire/connection.h"

#include <fmt/format.h>

namespace escdr::wire {

Status ReadFull(Connection& conn, std::span<std::uint8_t> buf, Deadline deadline) {
  std::size_t done = 0;
  while (done < buf.size()) {
    ESCDR_ASSIGN_OR_RETURN(std::size_t n, conn.ReadSome(buf.subspan(done), deadline));
    if (n == 0) {
      return Status::Unavailable(fmt::format("{}: connection closed after {} of {} bytes",
                                             conn.name(), done, buf.size()));
    }
    done += n;
  }
  return Status::OK();
}

}  // namespace escdr::wire
