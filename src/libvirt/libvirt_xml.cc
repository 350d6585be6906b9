// The domain XML and libosinfo ids: ParseDomainXml and ParseLibosinfoId.
#include <fmt/format.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include <cctype>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "escdr/libvirt/libvirt_host.h"

namespace escdr::libvirt {
namespace {

constexpr const char* kLibosinfoNs = "http://libosinfo.org/xmlns/libvirt/domain/1.0";

struct DocFree {
  void operator()(xmlDoc* d) const { xmlFreeDoc(d); }
};
struct ContextFree {
  void operator()(xmlXPathContext* c) const { xmlXPathFreeContext(c); }
};

// The string value of XPath `expr` ("" when nothing matches).
std::string XPathString(xmlXPathContext* ctx, const std::string& expr) {
  const std::string wrapped = "string(" + expr + ")";
  xmlXPathObject* obj =
      xmlXPathEvalExpression(reinterpret_cast<const xmlChar*>(wrapped.c_str()), ctx);
  if (obj == nullptr) return "";
  std::string out;
  if (obj->type == XPATH_STRING && obj->stringval != nullptr) {
    out = reinterpret_cast<const char*>(obj->stringval);
  }
  xmlXPathFreeObject(obj);
  // Element text may carry the document's indentation.
  const auto first = out.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = out.find_last_not_of(" \t\r\n");
  return out.substr(first, last - first + 1);
}

Result<std::uint64_t> ParseUnsigned(const std::string& text, const std::string& what) {
  if (text.empty() || text.size() > 19) {
    return Err(
        Status::ProtocolError(fmt::format("domain XML {} '{}' is not a number", what, text)));
  }
  std::uint64_t v = 0;
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) {
      return Err(
          Status::ProtocolError(fmt::format("domain XML {} '{}' is not a number", what, text)));
    }
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

// libvirt's memory units (docs: formatdomain "Memory Allocation") in bytes.
Result<std::uint64_t> UnitBytes(const std::string& unit) {
  std::string u;
  for (char c : unit) u += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (u == "b" || u == "bytes") return std::uint64_t{1};
  if (u == "kb") return std::uint64_t{1000};
  if (u.empty() || u == "k" || u == "kib") return std::uint64_t{1} << 10;
  if (u == "mb") return std::uint64_t{1000000};
  if (u == "m" || u == "mib") return std::uint64_t{1} << 20;
  if (u == "gb") return std::uint64_t{1000000000};
  if (u == "g" || u == "gib") return std::uint64_t{1} << 30;
  if (u == "tb") return std::uint64_t{1000000000000};
  if (u == "t" || u == "tib") return std::uint64_t{1} << 40;
  return Err(Status::ProtocolError(fmt::format("domain XML memory unit '{}' is unknown", unit)));
}

}  // namespace

Result<OsRelease> ParseLibosinfoId(const std::string& id) {
  std::string_view rest = id;
  if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
  } else {
    return Err(Status::InvalidArgument(fmt::format(
        "libosinfo id '{}' is not an http(s) URI like http://debian.org/debian/12", id)));
  }
  // host/.../os/version: a host and at least two non-empty path components.
  std::vector<std::string_view> parts;
  while (true) {
    const auto slash = rest.find('/');
    parts.push_back(rest.substr(0, slash));
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  for (std::string_view p : parts) {
    if (p.empty()) {
      return Err(
          Status::InvalidArgument(fmt::format("libosinfo id '{}' has an empty component", id)));
    }
  }
  if (parts.size() < 3) {
    return Err(Status::InvalidArgument(
        fmt::format("libosinfo id '{}' does not end in <os>/<version>", id)));
  }
  return OsRelease{std::string(parts[parts.size() - 2]), std::string(parts.back())};
}

Result<DomainInfo> ParseDomainXml(const std::string& xml) {
  static std::once_flag init;
  std::call_once(init, [] { xmlInitParser(); });
  if (xml.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return Err(Status::ProtocolError("domain XML is too large"));
  }
  std::unique_ptr<xmlDoc, DocFree> doc(
      xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (doc == nullptr) {
    const xmlError* e = xmlGetLastError();
    std::string why = e != nullptr && e->message != nullptr ? e->message : "unknown error";
    while (!why.empty() && why.back() == '\n') why.pop_back();
    return Err(Status::ProtocolError(fmt::format("domain XML does not parse: {}", why)));
  }
  std::unique_ptr<xmlXPathContext, ContextFree> ctx(xmlXPathNewContext(doc.get()));
  if (ctx == nullptr) return Err(Status::Internal("cannot create an XPath context"));
  xmlXPathRegisterNs(ctx.get(), reinterpret_cast<const xmlChar*>("libosinfo"),
                     reinterpret_cast<const xmlChar*>(kLibosinfoNs));

  DomainInfo info;
  info.name = XPathString(ctx.get(), "/domain/name");
  if (info.name.empty()) return Err(Status::ProtocolError("domain XML has no <domain><name>"));
  info.uuid = XPathString(ctx.get(), "/domain/uuid");
  const std::string memory = XPathString(ctx.get(), "/domain/memory");
  if (!memory.empty()) {
    ESCDR_ASSIGN_OR_RETURN(std::uint64_t amount, ParseUnsigned(memory, "<memory>"));
    ESCDR_ASSIGN_OR_RETURN(std::uint64_t unit,
                           UnitBytes(XPathString(ctx.get(), "/domain/memory/@unit")));
    if (amount > std::numeric_limits<std::uint64_t>::max() / unit) {
      return Err(Status::ProtocolError(fmt::format("domain XML <memory> {} is too large", memory)));
    }
    info.memory_kib = amount * unit / 1024;
  }
  const std::string vcpus = XPathString(ctx.get(), "/domain/vcpu");
  if (!vcpus.empty()) {
    ESCDR_ASSIGN_OR_RETURN(std::uint64_t n, ParseUnsigned(vcpus, "<vcpu>"));
    if (n > std::numeric_limits<std::uint32_t>::max()) {
      return Err(Status::ProtocolError(fmt::format("domain XML <vcpu> {} is too large", vcpus)));
    }
    info.vcpus = static_cast<std::uint32_t>(n);
  }
  info.machine = XPathString(ctx.get(), "/domain/os/type/@machine");
  info.emulator = XPathString(ctx.get(), "/domain/devices/emulator");
  info.os_id = XPathString(ctx.get(), "/domain/metadata/libosinfo:libosinfo/libosinfo:os/@id");
  return info;
}

}  // namespace escdr::libvirt
