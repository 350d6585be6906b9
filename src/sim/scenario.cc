#include "escdr/sim/scenario.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace escdr::sim {
namespace {

using nlohmann::json;

std::string TypeName(const json& j) {
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_boolean()) return "a boolean";
  if (j.is_array()) return "an array";
  if (j.is_object()) return "an object";
  return "null";
}

std::string Dump(const json& j) {
  std::string s = j.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// Reads one JSON object strictly: every key must be consumed by a getter, the
// first error wins and later getters do nothing. Paths name keys in messages.
class Obj {
 public:
  Obj(const json& j, std::string path, const std::string& origin, Status& err)
      : j_(j), path_(std::move(path)), origin_(origin), err_(err) {
    if (err_.ok() && !j_.is_object()) Fail(path_, "must be an object, got " + TypeName(j_));
  }

  bool ok() const { return err_.ok(); }
  const std::string& path() const { return path_; }
  std::string Key(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  // The value of `key` if present (marks it consumed).
  const json* Find(std::string_view key) {
    if (!err_.ok() || !j_.is_object()) return nullptr;
    auto it = j_.find(std::string(key));
    if (it == j_.end()) return nullptr;
    used_.insert(std::string(key));
    return &*it;
  }

  void Fail(const std::string& key, const std::string& what) {
    if (!err_.ok()) return;
    err_ = Status::InvalidArgument(fmt::format("{}: {} {}", origin_, key, what));
  }

  void Uint(std::string_view key, std::uint64_t& out, std::uint64_t min,
            std::uint64_t max = std::numeric_limits<std::uint32_t>::max()) {
    const json* v = Find(key);
    if (!v) return;
    if (!v->is_number_integer() || (v->is_number_integer() && v->get<std::int64_t>() < 0 &&
                                    !v->is_number_unsigned())) {
      Fail(Key(key), fmt::format("must be an integer >= {}, got {}", min, Dump(*v)));
      return;
    }
    const std::uint64_t x = v->get<std::uint64_t>();
    if (x < min || x > max) {
      Fail(Key(key), fmt::format("must be an integer in [{}, {}], got {}", min, max, x));
      return;
    }
    out = x;
  }
  void Uint32(std::string_view key, std::uint32_t& out, std::uint32_t min,
              std::uint32_t max = std::numeric_limits<std::uint32_t>::max()) {
    std::uint64_t x = out;
    Uint(key, x, min, max);
    out = static_cast<std::uint32_t>(x);
  }
  void Double(std::string_view key, double& out, double min, double max,
              bool min_exclusive = false) {
    const json* v = Find(key);
    if (!v) return;
    if (!v->is_number()) {
      Fail(Key(key), fmt::format("must be a number, got {}", TypeName(*v)));
      return;
    }
    const double x = v->get<double>();
    if (!std::isfinite(x) || x < min || x > max || (min_exclusive && x == min)) {
      Fail(Key(key), fmt::format("must be a number in {}{}, {}], got {}",
                                 min_exclusive ? "(" : "[", min, max, Dump(*v)));
      return;
    }
    out = x;
  }
  void Bool(std::string_view key, bool& out) {
    const json* v = Find(key);
    if (!v) return;
    if (!v->is_boolean()) {
      Fail(Key(key), fmt::format("must be true or false, got {}", Dump(*v)));
      return;
    }
    out = v->get<bool>();
  }
  void String(std::string_view key, std::string& out) {
    const json* v = Find(key);
    if (!v) return;
    if (!v->is_string()) {
      Fail(Key(key), fmt::format("must be a string, got {}", TypeName(*v)));
      return;
    }
    out = v->get<std::string>();
  }

  // Rejects keys no getter asked for (typos must not pass silently).
  void Finish() {
    if (!err_.ok() || !j_.is_object()) return;
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!used_.contains(it.key())) {
        Fail(Key(it.key()), "is not a known key");
        return;
      }
    }
  }

 private:
  const json& j_;
  std::string path_;
  const std::string& origin_;
  Status& err_;
  std::set<std::string> used_;
};

void ParseDistribution(Obj& parent, std::string_view key, Distribution& out, double max_value) {
  const json* v = parent.Find(key);
  if (!v) return;
  const std::string path = parent.Key(key);
  if (v->is_number()) {
    const double x = v->get<double>();
    if (!std::isfinite(x) || x < 0 || x > max_value) {
      parent.Fail(path, fmt::format("must be a number in [0, {}], got {}", max_value, Dump(*v)));
      return;
    }
    out = Distribution::Constant(x);
    return;
  }
  if (!v->is_object()) {
    parent.Fail(path, "must be a number or an object such as {\"uniform\": [lo, hi]}, got " +
                          TypeName(*v));
    return;
  }
  Distribution d;
  int forms = 0;
  for (const char* form : {"constant", "uniform", "choice", "exponential", "lognormal"}) {
    if (v->contains(form)) ++forms;
  }
  if (forms != 1) {
    parent.Fail(path, "must have exactly one of constant, uniform, choice, exponential, "
                      "lognormal");
    return;
  }
  auto number = [&](const json& x, const std::string& where, double& dst, bool positive) {
    if (!x.is_number() || !std::isfinite(x.get<double>()) || x.get<double>() < 0 ||
        x.get<double>() > max_value || (positive && x.get<double>() == 0)) {
      parent.Fail(where, fmt::format("must be a number in {}0, {}], got {}",
                                     positive ? "(" : "[", max_value, Dump(x)));
      return false;
    }
    dst = x.get<double>();
    return true;
  };
  if (v->contains("constant")) {
    d.type = Distribution::Type::kConstant;
    number(v->at("constant"), path + ".constant", d.a, false);
  } else if (v->contains("uniform")) {
    d.type = Distribution::Type::kUniform;
    const json& u = v->at("uniform");
    if (!u.is_array() || u.size() != 2) {
      parent.Fail(path + ".uniform", "must be [lo, hi], got " + Dump(u));
      return;
    }
    if (!number(u[0], path + ".uniform[0]", d.a, false)) return;
    if (!number(u[1], path + ".uniform[1]", d.b, false)) return;
    if (d.b < d.a) {
      parent.Fail(path + ".uniform", fmt::format("must have lo <= hi, got {}", Dump(u)));
      return;
    }
  } else if (v->contains("choice")) {
    d.type = Distribution::Type::kChoice;
    const json& c = v->at("choice");
    if (!c.is_array() || c.empty()) {
      parent.Fail(path + ".choice", "must be a non-empty array of numbers, got " + Dump(c));
      return;
    }
    for (std::size_t i = 0; i < c.size(); ++i) {
      double x = 0;
      if (!number(c[i], fmt::format("{}.choice[{}]", path, i), x, false)) return;
      d.values.push_back(x);
    }
    if (v->contains("weights")) {
      const json& w = v->at("weights");
      if (!w.is_array() || w.size() != c.size()) {
        parent.Fail(path + ".weights",
                    fmt::format("must be an array of {} numbers (one per choice), got {}",
                                c.size(), Dump(w)));
        return;
      }
      double sum = 0;
      for (std::size_t i = 0; i < w.size(); ++i) {
        if (!w[i].is_number() || w[i].get<double>() < 0 || !std::isfinite(w[i].get<double>())) {
          parent.Fail(fmt::format("{}.weights[{}]", path, i),
                      "must be a number >= 0, got " + Dump(w[i]));
          return;
        }
        d.weights.push_back(w[i].get<double>());
        sum += d.weights.back();
      }
      if (sum <= 0) {
        parent.Fail(path + ".weights", "must not all be zero");
        return;
      }
    } else {
      d.weights.assign(d.values.size(), 1.0);
    }
  } else if (v->contains("exponential")) {
    d.type = Distribution::Type::kExponential;
    number(v->at("exponential"), path + ".exponential", d.a, true);
  } else {
    d.type = Distribution::Type::kLognormal;
    const json& l = v->at("lognormal");
    if (!l.is_object() || !l.contains("median") || !l.contains("sigma") || l.size() != 2) {
      parent.Fail(path + ".lognormal",
                  "must be {\"median\": m, \"sigma\": s}, got " + Dump(l));
      return;
    }
    if (!number(l.at("median"), path + ".lognormal.median", d.a, true)) return;
    if (!l.at("sigma").is_number() || l.at("sigma").get<double>() < 0 ||
        l.at("sigma").get<double>() > 10) {
      parent.Fail(path + ".lognormal.sigma", "must be a number in [0, 10], got " +
                                                 Dump(l.at("sigma")));
      return;
    }
    d.b = l.at("sigma").get<double>();
  }
  for (auto it = v->begin(); it != v->end(); ++it) {
    const std::string& k = it.key();
    if (k == "constant" || k == "uniform" || k == "choice" || k == "exponential" ||
        k == "lognormal" || (k == "weights" && d.type == Distribution::Type::kChoice)) {
      continue;
    }
    if (k == "min" || k == "max") {
      double x = 0;
      if (!number(it.value(), path + "." + k, x, false)) return;
      (k == "min" ? d.min : d.max) = x;
      continue;
    }
    parent.Fail(path + "." + k, "is not a known key");
    return;
  }
  if (d.min && d.max && *d.min > *d.max) {
    parent.Fail(path, fmt::format("has min {} above max {}", *d.min, *d.max));
    return;
  }
  if (parent.ok()) out = std::move(d);
}

void ParseLinkTier(Obj& parent, std::string_view key, LinkTierOptions& out,
                   const std::string& origin, Status& err) {
  const json* v = parent.Find(key);
  if (!v) return;
  Obj o(*v, parent.Key(key), origin, err);
  o.Double("bandwidth_gbit_s", out.bandwidth_gbit_s, 0, 1e6, true);
  o.Double("latency_us", out.latency_us, 0, 1e7);
  o.Finish();
}

Result<VmKind> ParseKind(const json& j, const std::string& path, const std::string& origin) {
  Status err;
  VmKind kind;
  Obj o(j, path, origin, err);
  o.String("os", kind.os);
  o.String("os_version", kind.os_version);
  o.String("hypervisor", kind.hypervisor);
  o.String("hypervisor_version", kind.hypervisor_version);
  o.Finish();
  if (!err.ok()) return Err(err);
  if (Status s = kind.Validate(); !s.ok()) {
    return Err(Status::InvalidArgument(fmt::format("{}: {}: {}", origin, path, s.message())));
  }
  return kind;
}

// The whole file, or IOError whose message is the reason alone (callers name
// the file and what it was for).
Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Err(Status::IOError(std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Err(Status::IOError("read error"));
  return ss.str();
}

std::string ResolvePath(const std::string& origin, const std::string& path) {
  if (path.empty() || path[0] == '/' || origin.empty()) return path;
  return (std::filesystem::path(origin).parent_path() / path).string();
}

Status ParseKinds(const json& arr, const std::string& origin, std::vector<KindSpec>& out) {
  if (!arr.is_array() || arr.empty()) {
    return Status::InvalidArgument(origin + ": kinds must be a non-empty array");
  }
  for (std::size_t i = 0; i < arr.size(); ++i) {
    const std::string path = fmt::format("kinds[{}]", i);
    Status err;
    Obj o(arr[i], path, origin, err);
    KindSpec spec;
    spec.source = "scenario";
    bool have_kind = false;
    if (const json* m = o.Find("catalog_match")) {
      if (!m->is_string()) {
        return Status::InvalidArgument(
            fmt::format("{}: {}.catalog_match must be a file path, got {}", origin, path,
                        TypeName(*m)));
      }
      const std::string file = ResolvePath(origin, m->get<std::string>());
      auto text = ReadFile(file);
      if (!text) {
        return Status::InvalidArgument(fmt::format("{}: {}.catalog_match: cannot read {}: {}",
                                                   origin, path, file, text.error().message()));
      }
      ESCDR_ASSIGN_OR_RETURN(CatalogMatchFractions f, ParseCatalogMatch(*text, file));
      spec.kind = f.kind;
      spec.zero_fraction = f.zero;
      spec.by_position_fraction = f.by_position;
      spec.by_content_fraction = f.by_content;
      spec.source = file;
      have_kind = true;
    }
    if (const json* k = o.Find("kind")) {
      ESCDR_ASSIGN_OR_RETURN(spec.kind, ParseKind(*k, path + ".kind", origin));
      have_kind = true;
    }
    o.Double("weight", spec.weight, 0, 1e12);
    const bool has_static = arr[i].is_object() && arr[i].contains("static_fraction");
    const bool has_split = arr[i].is_object() && (arr[i].contains("by_position_fraction") ||
                                                  arr[i].contains("by_content_fraction"));
    if (has_static && has_split) {
      return Status::InvalidArgument(fmt::format(
          "{}: {} gives static_fraction and by_position/by_content fractions; give one or the "
          "other",
          origin, path));
    }
    if (has_static) {
      double s = 0;
      o.Double("static_fraction", s, 0, 1);
      spec.by_position_fraction = s;
      spec.by_content_fraction = 0;
    }
    o.Double("by_position_fraction", spec.by_position_fraction, 0, 1);
    o.Double("by_content_fraction", spec.by_content_fraction, 0, 1);
    o.Double("zero_fraction", spec.zero_fraction, 0, 1);
    o.Finish();
    if (!err.ok()) return err;
    if (!have_kind) {
      return Status::InvalidArgument(
          fmt::format("{}: {} needs a \"kind\" object or a \"catalog_match\" file", origin, path));
    }
    const bool fractions_given = spec.source != "scenario" || has_static || has_split;
    if (!fractions_given) {
      return Status::InvalidArgument(fmt::format(
          "{}: {} ({}) needs static_fraction (or a catalog_match file): the simulator has no "
          "built-in static fractions",
          origin, path, spec.kind.ToString()));
    }
    if (spec.zero_fraction + spec.static_fraction() > 1 + 1e-9) {
      return Status::InvalidArgument(fmt::format(
          "{}: {} ({}): zero_fraction {} + static fraction {} exceed 1", origin, path,
          spec.kind.ToString(), spec.zero_fraction, spec.static_fraction()));
    }
    for (const KindSpec& other : out) {
      if (other.kind == spec.kind) {
        return Status::InvalidArgument(
            fmt::format("{}: {} repeats kind {}", origin, path, spec.kind.ToString()));
      }
    }
    out.push_back(std::move(spec));
  }
  double total_weight = 0;
  for (const KindSpec& k : out) total_weight += k.weight;
  if (total_weight <= 0) return Status::InvalidArgument(origin + ": kinds weights are all zero");
  return Status::OK();
}

Result<EventType> ParseEventType(const std::string& s, const std::string& where) {
  if (s == "consolidation") return EventType::kConsolidation;
  if (s == "load_balancing") return EventType::kLoadBalancing;
  if (s == "drain") return EventType::kDrain;
  return Err(Status::InvalidArgument(
      fmt::format("{} must be consolidation, load_balancing or drain, got '{}'", where, s)));
}

}  // namespace

const char* EventTypeName(EventType type) {
  switch (type) {
    case EventType::kConsolidation:
      return "consolidation";
    case EventType::kLoadBalancing:
      return "load_balancing";
    case EventType::kDrain:
      return "drain";
  }
  return "unknown";
}

double Distribution::Sample(Rng& rng) const {
  double x = a;
  switch (type) {
    case Type::kConstant:
      break;
    case Type::kUniform:
      x = rng.Uniform(a, b);
      break;
    case Type::kChoice:
      x = values[rng.Pick(weights)];
      break;
    case Type::kExponential:
      x = rng.Exponential(a);
      break;
    case Type::kLognormal:
      x = a * std::exp(b * rng.Normal());
      break;
  }
  if (min) x = std::max(x, *min);
  if (max) x = std::min(x, *max);
  return x;
}

double Distribution::Mean() const {
  switch (type) {
    case Type::kConstant:
    case Type::kExponential:
      return a;
    case Type::kUniform:
      return (a + b) / 2;
    case Type::kChoice: {
      double sum = 0, wsum = 0;
      for (std::size_t i = 0; i < values.size(); ++i) {
        sum += values[i] * weights[i];
        wsum += weights[i];
      }
      return wsum > 0 ? sum / wsum : 0;
    }
    case Type::kLognormal:
      return a * std::exp(b * b / 2);
  }
  return a;
}

Result<CatalogMatchFractions> ParseCatalogMatch(std::string_view json_text,
                                                const std::string& origin) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    return Err(Status::InvalidArgument(
        fmt::format("cannot parse catalog match output {}: {}", origin, e.what())));
  }
  if (!j.is_object() || !j.contains("kind") || !j.contains("pages")) {
    return Err(Status::InvalidArgument(fmt::format(
        "{} is not `escdr --json catalog match` output: it needs \"kind\" and \"pages\"",
        origin)));
  }
  CatalogMatchFractions f;
  {
    const json& k = j.at("kind");
    auto field = [&](const char* name) -> std::string {
      return k.is_object() && k.contains(name) && k.at(name).is_string()
                 ? k.at(name).get<std::string>()
                 : std::string();
    };
    f.kind = VmKind{field("os"), field("os_version"), field("hypervisor"),
                    field("hypervisor_version")};
    if (Status s = f.kind.Validate(); !s.ok()) {
      return Err(Status::InvalidArgument(fmt::format("{}: kind: {}", origin, s.message())));
    }
  }
  const json& p = j.at("pages");
  std::uint64_t counts[5] = {};
  const char* names[5] = {"total", "zero", "by_position", "by_content_only", "other"};
  for (int i = 0; i < 5; ++i) {
    if (!p.is_object() || !p.contains(names[i]) || !p.at(names[i]).is_number_unsigned()) {
      return Err(Status::InvalidArgument(
          fmt::format("{}: pages.{} is missing or not a count", origin, names[i])));
    }
    counts[i] = p.at(names[i]).get<std::uint64_t>();
  }
  if (counts[0] == 0 || counts[1] + counts[2] + counts[3] + counts[4] != counts[0]) {
    return Err(Status::InvalidArgument(fmt::format(
        "{}: pages do not add up: total {} != zero {} + by_position {} + by_content_only {} + "
        "other {}",
        origin, counts[0], counts[1], counts[2], counts[3], counts[4])));
  }
  const double total = static_cast<double>(counts[0]);
  f.total_pages = counts[0];
  f.zero = static_cast<double>(counts[1]) / total;
  f.by_position = static_cast<double>(counts[2]) / total;
  f.by_content = static_cast<double>(counts[3]) / total;
  return f;
}

Result<Scenario> ParseScenario(std::string_view json_text, const std::string& origin_in) {
  const std::string origin = origin_in.empty() ? std::string("scenario") : origin_in;
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    return Err(Status::InvalidArgument(fmt::format("cannot parse {}: {}", origin, e.what())));
  }
  Scenario s;
  s.origin = origin_in;
  if (!origin_in.empty()) s.name = std::filesystem::path(origin_in).stem().string();
  Status err;
  Obj root(j, "", origin, err);
  root.String("name", s.name);
  root.String("description", s.description);
  root.Uint("seed", s.seed, 0, std::numeric_limits<std::uint64_t>::max());

  if (const json* t = root.Find("topology")) {
    Obj o(*t, "topology", origin, err);
    TopologyOptions& top = s.topology;
    o.Uint32("pods", top.pods, 1, 10000);
    o.Uint32("racks_per_pod", top.racks_per_pod, 1, 10000);
    o.Uint32("hosts_per_rack", top.hosts_per_rack, 1, 10000);
    o.Uint("host_memory_gib", top.host_memory_gib, 1, 1 << 20);
    o.Uint32("host_vcpus", top.host_vcpus, 1, 1 << 20);
    ParseLinkTier(o, "host_link", top.host_link, origin, err);
    ParseLinkTier(o, "rack_uplink", top.rack_uplink, origin, err);
    ParseLinkTier(o, "pod_uplink", top.pod_uplink, origin, err);
    o.Finish();
    if (err.ok() && top.hosts() > 1000000) {
      o.Fail("topology", fmt::format("has {} hosts; at most 1,000,000 are supported", top.hosts()));
    }
    if (err.ok() && top.hosts() < 2) o.Fail("topology", "needs at least 2 hosts to migrate between");
  }
  if (!err.ok()) return Err(err);

  if (const json* k = root.Find("kinds")) {
    ESCDR_RETURN_IF_ERROR(ParseKinds(*k, origin_in.empty() ? origin : origin_in, s.kinds));
  } else {
    return Err(Status::InvalidArgument(origin + ": kinds is missing (the VM kind mix)"));
  }

  if (const json* v = root.Find("vms")) {
    Obj o(*v, "vms", origin, err);
    o.Uint("count", s.vms.count, 1, 100000000);
    ParseDistribution(o, "memory_mib", s.vms.memory_mib, 1 << 24);
    ParseDistribution(o, "vcpus", s.vms.vcpus, 1 << 16);
    ParseDistribution(o, "dirty_rate_mib_s", s.vms.dirty_rate_mib_s, 1e6);
    ParseDistribution(o, "working_set_fraction", s.vms.working_set_fraction, 1);
    o.Finish();
  }
  if (!err.ok()) return Err(err);

  if (const json* p = root.Find("placement")) {
    Obj o(*p, "placement", origin, err);
    if (const json* pol = o.Find("policies")) {
      if (!pol->is_array() || pol->empty()) {
        o.Fail("placement.policies", "must be a non-empty array of spread, pack, random");
      } else {
        s.placement.policies.clear();
        for (const json& name : *pol) {
          auto policy = name.is_string() ? ParsePlacementPolicy(name.get<std::string>())
                                         : Result<PlacementPolicy>(Err(Status::InvalidArgument(
                                               "a policy name must be a string")));
          if (!policy) {
            o.Fail("placement.policies", "has a bad entry: " + policy.error().message());
            break;
          }
          if (std::find(s.placement.policies.begin(), s.placement.policies.end(), *policy) ==
              s.placement.policies.end()) {
            s.placement.policies.push_back(*policy);
          }
        }
      }
    }
    o.Uint32("candidate_hosts", s.placement.candidate_hosts, 0);
    o.Finish();
  }
  if (!err.ok()) return Err(err);

  if (const json* w = root.Find("workload")) {
    Obj o(*w, "workload", origin, err);
    WorkloadOptions& wl = s.workload;
    o.Uint("migrations", wl.migrations, 0, 100000000);
    o.Double("events_per_hour", wl.events_per_hour, 0, 1e9);
    o.Double("consolidation_weight", wl.consolidation_weight, 0, 1e9);
    o.Double("load_balancing_weight", wl.load_balancing_weight, 0, 1e9);
    o.Double("drain_weight", wl.drain_weight, 0, 1e9);
    o.Uint32("concurrent_per_event", wl.concurrent_per_event, 1, 1024);
    o.Uint32("load_balancing_vms", wl.load_balancing_vms, 1, 1024);
    o.Double("maintenance_s", wl.maintenance_s, 0, 1e9);
    o.Double("consolidation_off_s", wl.consolidation_off_s, 0, 1e9);
    if (const json* script = o.Find("script")) {
      if (!script->is_array()) {
        o.Fail("workload.script", "must be an array of events");
      } else {
        for (std::size_t i = 0; i < script->size() && err.ok(); ++i) {
          const std::string path = fmt::format("workload.script[{}]", i);
          Obj e((*script)[i], path, origin, err);
          ScriptedEvent ev;
          std::string type;
          e.Double("at_s", ev.at_s, 0, 1e12);
          e.String("type", type);
          e.Uint32("count", ev.count, 1, 1000000);
          e.String("host", ev.host);
          e.Finish();
          if (!err.ok()) break;
          auto t = ParseEventType(type, origin + ": " + path + ".type");
          if (!t) return Err(t.error());
          ev.type = *t;
          if (!ev.host.empty() && ev.count != 1) {
            e.Fail(path, "names a host, so its count must be 1");
            break;
          }
          wl.script.push_back(std::move(ev));
        }
      }
    }
    o.Finish();
    if (err.ok() && wl.migrations > 0 && wl.events_per_hour == 0 && wl.script.empty()) {
      o.Fail("workload", "has no events: set events_per_hour or a script");
    }
    if (err.ok() && wl.events_per_hour > 0 &&
        wl.consolidation_weight + wl.load_balancing_weight + wl.drain_weight <= 0) {
      o.Fail("workload", "event weights are all zero");
    }
  }
  if (!err.ok()) return Err(err);

  if (const json* m = root.Find("migration")) {
    Obj o(*m, "migration", origin, err);
    MigrationOptions& mo = s.migration;
    o.Double("max_bandwidth_mb_s", mo.max_bandwidth_mb_s, 0, 1e9);
    o.Double("stream_rate_mb_s", mo.stream_rate_mb_s, 0, 1e9);
    o.Double("setup_s", mo.setup_s, 0, 1e6);
    o.Double("donor_scan_s", mo.donor_scan_s, 0, 1e6);
    o.Double("downtime_limit_ms", mo.downtime_limit_ms, 0, 1e9, true);
    o.Uint32("max_rounds", mo.max_rounds, 1, 10000);
    o.Bool("zero_page_skipping", mo.zero_page_skipping);
    o.Bool("page_headers", mo.page_headers);
    o.Double("device_state_kib", mo.device_state_kib, 0, 1e9);
    o.Double("reference_bytes_per_page", mo.reference_bytes_per_page, 0, 4096);
    o.Finish();
  }
  if (!err.ok()) return Err(err);

  if (const json* r = root.Find("reference")) {
    // One object or an array of objects.
    const bool many = r->is_array();
    const std::size_t n = many ? r->size() : 1;
    for (std::size_t i = 0; i < n && err.ok(); ++i) {
      const json& item = many ? (*r)[i] : *r;
      const std::string path = many ? fmt::format("reference[{}]", i) : "reference";
      Obj o(item, path, origin, err);
      ReferenceMeasurement ref;
      o.String("description", ref.description);
      if (const json* t = o.Find("measured_total_s"); t && !t->is_null()) {
        if (!t->is_number() || t->get<double>() <= 0) {
          o.Fail(o.Key("measured_total_s"), "must be null or a number > 0, got " + Dump(*t));
        } else {
          ref.measured_total_s = t->get<double>();
        }
      }
      if (const json* t = o.Find("measured_downtime_ms"); t && !t->is_null()) {
        if (!t->is_number() || t->get<double>() < 0) {
          o.Fail(o.Key("measured_downtime_ms"), "must be null or a number >= 0, got " + Dump(*t));
        } else {
          ref.measured_downtime_ms = t->get<double>();
        }
      }
      o.Double("tolerance", ref.tolerance, 0, 10);
      o.Bool("escdr", ref.escdr);
      o.Finish();
      s.references.push_back(ref);
    }
  }
  root.Finish();
  if (!err.ok()) return Err(err);
  if (s.name.empty()) s.name = "scenario";
  return s;
}

Result<Scenario> LoadScenario(const std::string& path) {
  auto text = ReadFile(path);
  if (!text) {
    return Err(Status::IOError(fmt::format("cannot read scenario {}: {}", path,
                                           text.error().message())));
  }
  return ParseScenario(*text, path);
}

}  // namespace escdr::sim
