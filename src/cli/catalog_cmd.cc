// `escdr catalog ...`: learn, list, show, match, export, import and remove
// static-page catalogs (docs/cli-catalog.md).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/inventory_access.h"
#include "escdr/base/qemu_version.h"
#include "escdr/base/vm_kind.h"
#include "escdr/catalog/catalog.h"
#include "escdr/catalog/catalog_format.h"
#include "escdr/catalog/catalog_learner.h"
#include "escdr/catalog/catalog_match.h"
#include "escdr/catalog/catalog_store.h"
#include "escdr/catalog/directory_catalog_store.h"
#include "escdr/image/memory_image.h"
#include "escdr/inventory/inventory.h"

namespace escdr::cli {
namespace {

using nlohmann::json;

// Where catalogs live: the inventory (--db, default <state-dir>/inventory.db),
// so that every agent sharing the inventory uses the same catalogs. Files
// move in and out with `catalog export` / `catalog import`.
Result<std::unique_ptr<CatalogStore>> OpenCatalogStore(const GlobalOptions& global) {
  ESCDR_ASSIGN_OR_RETURN(std::unique_ptr<Inventory> inventory, OpenInventoryFromGlobal(global));
  return std::unique_ptr<CatalogStore>(std::move(inventory));
}

// The four key flags, shared by most subcommands.
struct KindFlags {
  std::string os, os_version, hypervisor, hypervisor_version;

  void AddTo(CLI::App* cmd, const std::string& req) {
    cmd->add_option("--os", os, "Guest OS name, e.g. debian" + req);
    cmd->add_option("--os-version", os_version, "Guest OS version, e.g. 12" + req);
    cmd->add_option("--hypervisor", hypervisor, "Hypervisor name, e.g. qemu" + req);
    cmd->add_option("--hypervisor-version", hypervisor_version,
                    "Hypervisor version, e.g. 7.2" + req);
  }

  bool any() const {
    return !os.empty() || !os_version.empty() || !hypervisor.empty() ||
           !hypervisor_version.empty();
  }

  // All four flags as a valid kind, or an error naming the first missing one.
  Result<VmKind> Require(std::string_view command) const {
    const std::pair<const char*, const std::string*> flags[] = {
        {"--os", &os},
        {"--os-version", &os_version},
        {"--hypervisor", &hypervisor},
        {"--hypervisor-version", &hypervisor_version}};
    for (const auto& [flag, value] : flags) {
      if (value->empty()) {
        return Err(Status::InvalidArgument(fmt::format("{} needs {}", command, flag)));
      }
    }
    VmKind kind{os, os_version, hypervisor, hypervisor_version};
    ESCDR_RETURN_IF_ERROR(kind.Validate().WithContext(std::string(command)));
    return kind;
  }

  // OK if every flag given equals the field of `kind`.
  Status CheckMatches(const VmKind& kind, const std::string& what) const {
    const std::tuple<const char*, const std::string*, const std::string*> flags[] = {
        {"--os", &os, &kind.os},
        {"--os-version", &os_version, &kind.os_version},
        {"--hypervisor", &hypervisor, &kind.hypervisor},
        {"--hypervisor-version", &hypervisor_version, &kind.hypervisor_version}};
    for (const auto& [flag, given, actual] : flags) {
      if (!given->empty() && *given != *actual) {
        return Status::InvalidArgument(fmt::format("{} is for {}, not {} {}", what,
                                                   kind.ToString(), flag, *given));
      }
    }
    return Status::OK();
  }
};

json KindJson(const VmKind& kind) {
  return json{{"os", kind.os},
              {"os_version", kind.os_version},
              {"hypervisor", kind.hypervisor},
              {"hypervisor_version", kind.hypervisor_version}};
}

json BlocksJson(const std::vector<RamBlockInfo>& blocks) {
  json out = json::array();
  for (const RamBlockInfo& b : blocks) out.push_back(json{{"name", b.name}, {"length", b.length}});
  return out;
}

json SummaryJson(const CatalogSummary& s, std::uint64_t size_bytes) {
  return json{{"kind", KindJson(s.kind)},
              {"format_version", kCatalogFormatVersion},
              {"hash_algorithm", "XXH3-128"},
              {"samples", s.sample_count},
              {"blocks", BlocksJson(s.blocks)},
              {"content_pages", s.content_count},
              {"position_pages", s.position_count},
              {"size_bytes", size_bytes}};
}

void PrintJson(const json& doc) {
  // Replace rather than throw on bytes that are not UTF-8 (kind strings are
  // checked for control characters only).
  std::fputs(doc.dump(2, ' ', false, json::error_handler_t::replace).c_str(), stdout);
  std::fputc('\n', stdout);
}

// "300 unique pages (1.2 MiB)"
std::string Pages(std::uint64_t pages, std::string_view what) {
  return fmt::format("{} {} ({})", pages, what, HumanBytes(static_cast<double>(pages * kPageSize)));
}

std::string BlockList(const std::vector<RamBlockInfo>& blocks) {
  std::string out;
  for (const RamBlockInfo& b : blocks) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{} ({})", b.name, HumanBytes(static_cast<double>(b.length)));
  }
  return out;
}

void PrintSummaryTable(const CatalogSummary& s, std::uint64_t size_bytes) {
  Table t({"FIELD", "VALUE"});
  t.AddRow({"kind", s.kind.ToString()});
  t.AddRow({"format", fmt::format("version {}, XXH3-128 page hashes", kCatalogFormatVersion)});
  t.AddRow({"samples", std::to_string(s.sample_count)});
  t.AddRow({"blocks", BlockList(s.blocks)});
  t.AddRow({"static by content", Pages(s.content_count, "unique pages")});
  t.AddRow({"static by position", Pages(s.position_count, "pages")});
  t.AddRow({"catalog size", HumanBytes(static_cast<double>(size_bytes))});
  std::fputs(t.Render().c_str(), stdout);
}

Result<Catalog> LoadCatalog(CatalogStore& store, const VmKind& kind) {
  ESCDR_ASSIGN_OR_RETURN(const std::string bytes, store.GetCatalog(kind));
  Result<Catalog> catalog = DecodeCatalog(bytes);
  if (!catalog) {
    return Err(catalog.error().WithContext(fmt::format("stored catalog of {}", kind.ToString())));
  }
  return catalog;
}

// ---- learn ----

struct LearnArgs {
  KindFlags kind;
  std::vector<std::string> images;
  std::vector<std::string> vms;  // --from-vm, in order
};

// The RAM files of the VMs named by --from-vm, looked up in the inventory.
// Every VM must be known, running, of one kind (the flags' kind if any flag
// is given) and have a RAM file this process can read; the first that is not
// is refused with an error naming it.
Result<std::vector<Vm>> ResolveLearnVms(Inventory& inventory, const LearnArgs& args) {
  std::vector<Vm> vms;
  for (const std::string& name : args.vms) {
    for (const Vm& seen : vms) {
      if (seen.name == name) {
        return Err(Status::InvalidArgument(
            fmt::format("catalog learn: VM {} is named twice by --from-vm", name)));
      }
    }
    Result<Vm> vm = inventory.GetVm(name);
    if (!vm.has_value()) {
      if (vm.error().code() == StatusCode::kNotFound) {
        return Err(Status::NotFound(
            fmt::format("catalog learn: VM {} is not in the inventory", name)));
      }
      return Err(vm.error().WithContext(fmt::format("catalog learn: cannot look up VM {}", name)));
    }
    if (vm->state != VmState::kRunning) {
      return Err(Status::FailedPrecondition(fmt::format(
          "catalog learn: VM {} is {} on {}, not running", name, VmStateName(vm->state),
          vm->host)));
    }
    if (!vms.empty() && vm->kind != vms.front().kind) {
      return Err(Status::InvalidArgument(fmt::format(
          "catalog learn: VM {} is {}, but VM {} is {}: samples must be of one kind", name,
          vm->kind.ToString(), vms.front().name, vms.front().kind.ToString())));
    }
    ESCDR_RETURN_IF_ERROR(args.kind.CheckMatches(vm->kind, "catalog learn: VM " + name));
    if (vm->ram_path.empty()) {
      return Err(Status::FailedPrecondition(fmt::format(
          "catalog learn: VM {} on {} has no RAM file in the inventory", name, vm->host)));
    }
    if (::access(vm->ram_path.c_str(), R_OK) != 0) {
      return Err(Status::IOError(fmt::format(
          "catalog learn: the RAM file {} of VM {} (on {}) is not readable on this machine: {}",
          vm->ram_path, name, vm->host, std::strerror(errno))));
    }
    vms.push_back(std::move(*vm));
  }
  return vms;
}

void RunLearn(const GlobalOptions& global, const LearnArgs& args) {
  std::unique_ptr<Inventory> inventory = Unwrap(OpenInventoryFromGlobal(global));
  const std::vector<Vm> vms = Unwrap(ResolveLearnVms(*inventory, args));
  // Only VMs: the kind is theirs (flags, if given, were checked against it).
  const VmKind kind = !vms.empty() && args.images.empty() ? vms.front().kind
                                                          : Unwrap(args.kind.Require("catalog learn"));
  std::vector<std::string> paths = args.images;
  for (const Vm& vm : vms) paths.push_back(vm.ram_path);
  if (paths.size() < 2) {
    Fail(Status::InvalidArgument(fmt::format(
        "catalog learn needs at least 2 images of {}, got {}", kind.ToString(), paths.size())));
  }
  const auto start = std::chrono::steady_clock::now();
  CatalogLearner learner(kind);
  std::uint64_t bytes_read = 0;
  // One image open at a time: a saved stream is rebuilt in memory, so N of
  // them at once would cost N times the guest's RAM.
  for (std::size_t i = 0; i < paths.size(); ++i) {
    Result<std::unique_ptr<MemoryImage>> image = OpenImage(paths[i]);
    if (!image.has_value() && i >= args.images.size()) {
      const Vm& vm = vms[i - args.images.size()];
      Fail(image.error().WithContext(
          fmt::format("catalog learn: cannot read the RAM file of VM {} (on {})", vm.name, vm.host)));
    }
    const std::unique_ptr<MemoryImage> sample = Unwrap(std::move(image));
    Check(learner.AddSample(*sample));
    bytes_read += sample->TotalBytes();
  }
  const Catalog catalog = Unwrap(std::move(learner).Finish());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string bytes = EncodeCatalog(catalog);
  Check(inventory->PutCatalog(kind, bytes));

  const CatalogSummary summary = catalog.Summary();
  if (global.json) {
    json doc = SummaryJson(summary, bytes.size());
    doc["images"] = paths;
    json names = json::array();
    for (const Vm& vm : vms) names.push_back(vm.name);
    doc["vms"] = names;
    doc["seconds"] = seconds;
    PrintJson(doc);
    return;
  }
  std::string from = fmt::format("{} images", paths.size());
  if (args.images.empty()) {
    std::string names;
    for (const Vm& vm : vms) names += (names.empty() ? "" : ", ") + vm.name;
    from = fmt::format("{} running VMs ({})", vms.size(), names);
  }
  std::printf("learned the catalog of %s from %s (%s in %.2f s)\n", kind.ToString().c_str(),
              from.c_str(), HumanBytes(static_cast<double>(bytes_read)).c_str(), seconds);
  PrintSummaryTable(summary, bytes.size());
}

// ---- list ----

// The share of a kind's RAM that its catalog holds as static by position
// (the pages a donor fills in by position), 0..1.
double StaticShare(const CatalogSummary& summary) {
  std::uint64_t pages = 0;
  for (const RamBlockInfo& b : summary.blocks) pages += b.length / kPageSize;
  return pages == 0 ? 0.0 : static_cast<double>(summary.position_count) / static_cast<double>(pages);
}

// The paper's two-dimensional list: one row per OS version, one column per
// hypervisor version, each cell the static share of that kind's catalog.
std::string RenderKindGrid(const std::map<std::pair<std::string, std::string>, std::string>& cells) {
  std::vector<std::string> rows, cols;
  for (const auto& [key, value] : cells) {
    if (std::find(rows.begin(), rows.end(), key.first) == rows.end()) rows.push_back(key.first);
    if (std::find(cols.begin(), cols.end(), key.second) == cols.end()) cols.push_back(key.second);
  }
  std::sort(cols.begin(), cols.end(), [](const std::string& a, const std::string& b) {
    // "qemu 10.0" after "qemu 7.2": numeric within one hypervisor.
    const std::size_t sa = a.rfind(' '), sb = b.rfind(' ');
    if (a.substr(0, sa) != b.substr(0, sb)) return a < b;
    return CompareQemuVersions(a.substr(sa + 1), b.substr(sb + 1)) < 0;
  });
  std::vector<std::string> header = {"OS \\ HYPERVISOR"};
  for (const std::string& c : cols) header.push_back(">" + c);
  Table t(header);
  for (const std::string& r : rows) {
    std::vector<std::string> row = {r};
    for (const std::string& c : cols) {
      auto it = cells.find({r, c});
      row.push_back(it == cells.end() ? "-" : it->second);
    }
    t.AddRow(std::move(row));
  }
  return t.Render();
}

void RunList(const GlobalOptions& global) {
  auto store = Unwrap(OpenCatalogStore(global));
  const std::vector<StoredCatalogInfo> infos = Unwrap(store->ListCatalogs());
  json docs = json::array();
  Table t({"OS", "OS VERSION", "HYPERVISOR", "HV VERSION", ">SAMPLES", ">CONTENT", ">POSITION",
           ">STATIC", ">SIZE", "STORED"});
  std::map<std::pair<std::string, std::string>, std::string> grid;
  for (const StoredCatalogInfo& info : infos) {
    // A damaged catalog is listed with its error instead of hiding the rest.
    Result<std::string> bytes = store->GetCatalog(info.kind);
    Result<CatalogSummary> summary =
        bytes ? DecodeCatalogSummary(*bytes) : Result<CatalogSummary>(Err(bytes.error()));
    json doc{{"kind", KindJson(info.kind)},
             {"size_bytes", info.size_bytes},
             {"created_at", info.created_at}};
    std::vector<std::string> row = {info.kind.os, info.kind.os_version, info.kind.hypervisor,
                                    info.kind.hypervisor_version};
    const std::pair<std::string, std::string> cell = {
        info.kind.os + " " + info.kind.os_version,
        info.kind.hypervisor + " " + info.kind.hypervisor_version};
    if (summary) {
      const double share = StaticShare(*summary);
      doc["samples"] = summary->sample_count;
      doc["content_pages"] = summary->content_count;
      doc["position_pages"] = summary->position_count;
      doc["static_share"] = share;
      row.insert(row.end(), {std::to_string(summary->sample_count),
                             std::to_string(summary->content_count),
                             std::to_string(summary->position_count),
                             fmt::format("{:.1f}%", 100.0 * share)});
      grid[cell] = fmt::format("{:.1f}%", 100.0 * share);
    } else {
      doc["error"] = summary.error().message();
      row.insert(row.end(), {"-", "-", "-", "-"});
      grid[cell] = "damaged";
    }
    row.push_back(HumanBytes(static_cast<double>(info.size_bytes)));
    row.push_back(summary ? info.created_at : "damaged: " + summary.error().message());
    t.AddRow(std::move(row));
    docs.push_back(std::move(doc));
  }
  if (global.json) {
    PrintJson(json{{"catalogs", docs}});
    return;
  }
  if (infos.empty()) {
    std::puts("no catalogs (learn one with `escdr catalog learn`)");
    return;
  }
  std::fputs(t.Render().c_str(), stdout);
  std::puts("\nstatic share of RAM by kind (pages static by position / all pages):");
  std::fputs(RenderKindGrid(grid).c_str(), stdout);
}

// ---- show ----

void RunShow(const GlobalOptions& global, const KindFlags& flags) {
  const VmKind kind = Unwrap(flags.Require("catalog show"));
  auto store = Unwrap(OpenCatalogStore(global));
  const std::string bytes = Unwrap(store->GetCatalog(kind));
  const Catalog catalog = Unwrap(DecodeCatalog(bytes));
  const CatalogSummary summary = catalog.Summary();
  if (global.json) {
    json doc = SummaryJson(summary, bytes.size());
    for (std::size_t b = 0; b < catalog.blocks().size(); ++b) {
      doc["blocks"][b]["position_pages"] = catalog.Positions(b).size();
    }
    doc["memory_bytes"] = catalog.memory_bytes();
    PrintJson(doc);
    return;
  }
  PrintSummaryTable(summary, bytes.size());
  std::puts("");
  Table t({"BLOCK", ">LENGTH", ">PAGES", ">STATIC BY POSITION", ">%"});
  for (std::size_t b = 0; b < catalog.blocks().size(); ++b) {
    const RamBlockInfo& block = catalog.blocks()[b];
    const std::uint64_t pages = block.length / kPageSize;
    const std::size_t positions = catalog.Positions(b).size();
    t.AddRow({block.name, HumanBytes(static_cast<double>(block.length)), std::to_string(pages),
              std::to_string(positions),
              fmt::format("{:.1f}", 100.0 * static_cast<double>(positions) /
                                        static_cast<double>(pages))});
  }
  std::fputs(t.Render().c_str(), stdout);
}

// ---- match ----

struct MatchArgs {
  KindFlags kind;
  std::string image;
};

json CountsJson(const PageCounts& c) {
  return json{{"total", c.total},
              {"zero", c.zero},
              {"by_position", c.by_position},
              {"by_content_only", c.by_content_only},
              {"other", c.other}};
}

std::vector<std::string> CountsRow(const std::string& name, const PageCounts& c) {
  return {name,
          std::to_string(c.total),
          std::to_string(c.zero),
          std::to_string(c.by_position),
          std::to_string(c.by_content_only),
          std::to_string(c.other),
          HumanBytes(static_cast<double>(c.SavedBytes())),
          fmt::format("{:.1f}", c.SavedPercent())};
}

void RunMatch(const GlobalOptions& global, const MatchArgs& args) {
  const VmKind kind = Unwrap(args.kind.Require("catalog match"));
  if (args.image.empty()) Fail(Status::InvalidArgument("catalog match needs an IMAGE"));
  auto store = Unwrap(OpenCatalogStore(global));
  const Catalog catalog = Unwrap(LoadCatalog(*store, kind));
  std::unique_ptr<MemoryImage> image = Unwrap(OpenImage(args.image));
  const auto start = std::chrono::steady_clock::now();
  const MatchReport report = Unwrap(MatchImage(catalog, *image));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const PageCounts& total = report.total;
  if (global.json) {
    json blocks = json::array();
    for (const BlockMatch& b : report.blocks) {
      blocks.push_back(json{{"name", b.name},
                            {"length", b.length},
                            {"in_catalog", b.in_catalog},
                            {"pages", CountsJson(b.pages)}});
    }
    PrintJson(json{{"kind", KindJson(kind)},
                   {"image", args.image},
                   {"blocks", blocks},
                   {"pages", CountsJson(total)},
                   {"total_bytes", total.total * kPageSize},
                   {"saved_bytes", total.SavedBytes()},
                   {"saved_percent", total.SavedPercent()},
                   {"saved_percent_of_nonzero", total.SavedPercentOfNonZero()},
                   {"seconds", seconds}});
    return;
  }
  Table t({"BLOCK", ">PAGES", ">ZERO", ">BY POSITION", ">BY CONTENT ONLY", ">OTHER", ">SAVED",
           ">SAVED %"});
  for (const BlockMatch& b : report.blocks) {
    t.AddRow(CountsRow(b.in_catalog ? b.name : b.name + " (content only)", b.pages));
  }
  if (report.blocks.size() > 1) t.AddRow(CountsRow("total", total));
  std::printf("%s against the catalog of %s\n", args.image.c_str(), kind.ToString().c_str());
  std::fputs(t.Render().c_str(), stdout);
  std::printf(
      "expected saving: %s of %s (%.1f%% of all pages, %.1f%% of non-zero pages)\n",
      HumanBytes(static_cast<double>(total.SavedBytes())).c_str(),
      HumanBytes(static_cast<double>(total.total * kPageSize)).c_str(), total.SavedPercent(),
      total.SavedPercentOfNonZero());
}

// ---- export / import / remove ----

struct FileArgs {
  KindFlags kind;
  std::string file;
};

void RunExport(const GlobalOptions& global, const FileArgs& args) {
  const VmKind kind = Unwrap(args.kind.Require("catalog export"));
  if (args.file.empty()) Fail(Status::InvalidArgument("catalog export needs a FILE"));
  auto store = Unwrap(OpenCatalogStore(global));
  const std::string bytes = Unwrap(store->GetCatalog(kind));
  // Never export a damaged catalog: check it as an importer will.
  const CatalogSummary summary = Unwrap(DecodeCatalogSummary(bytes));
  Check(WriteFileAtomically(args.file, bytes));
  if (global.json) {
    json doc = SummaryJson(summary, bytes.size());
    doc["file"] = args.file;
    PrintJson(doc);
    return;
  }
  std::printf("exported the catalog of %s (%s) to %s\n", kind.ToString().c_str(),
              HumanBytes(static_cast<double>(bytes.size())).c_str(), args.file.c_str());
}

void RunImport(const GlobalOptions& global, const FileArgs& args) {
  if (args.file.empty()) Fail(Status::InvalidArgument("catalog import needs a FILE"));
  const std::string bytes = Unwrap(ReadCatalogBytes(args.file));
  Result<Catalog> decoded = DecodeCatalog(bytes);
  if (!decoded) Fail(decoded.error().WithContext("cannot import " + args.file));
  const Catalog& catalog = *decoded;
  Check(args.kind.CheckMatches(catalog.kind(), "cannot import " + args.file + ": it"));
  auto store = Unwrap(OpenCatalogStore(global));
  Check(store->PutCatalog(catalog.kind(), bytes));
  const CatalogSummary summary = catalog.Summary();
  if (global.json) {
    json doc = SummaryJson(summary, bytes.size());
    doc["file"] = args.file;
    PrintJson(doc);
    return;
  }
  std::printf("imported the catalog of %s from %s\n", catalog.kind().ToString().c_str(),
              args.file.c_str());
  PrintSummaryTable(summary, bytes.size());
}

void RunRemove(const GlobalOptions& global, const KindFlags& flags) {
  const VmKind kind = Unwrap(flags.Require("catalog remove"));
  auto store = Unwrap(OpenCatalogStore(global));
  Check(store->RemoveCatalog(kind));
  if (global.json) {
    PrintJson(json{{"removed", KindJson(kind)}});
    return;
  }
  std::printf("removed the catalog of %s\n", kind.ToString().c_str());
}

void RegisterCatalog(CLI::App& app, GlobalOptions& global) {
  CLI::App* catalog = GetOrAddSubcommand(
      app, "catalog", "Static-page catalogs: learn, list, show, match, export, import, remove");
  catalog->require_subcommand(1);

  // Arguments live as long as the program: CLI11 writes into them during
  // parse() and the callbacks read them afterwards.
  auto learn_args = std::make_shared<LearnArgs>();
  CLI::App* learn = catalog->add_subcommand(
      "learn", "Learn the catalog of a kind from N >= 2 memory images and store it");
  learn_args->kind.AddTo(learn, " (required unless every sample is a --from-vm)");
  learn->add_option("IMAGE", learn_args->images,
                    "Guest RAM files or saved migration streams of that kind");
  learn->add_option("--from-vm", learn_args->vms,
                    "A running VM of the inventory whose RAM file is a sample (repeatable)")
      ->allow_extra_args(false);
  learn->callback([&global, learn_args] { RunLearn(global, *learn_args); });

  catalog->add_subcommand("list", "List the stored catalogs")->callback([&global] {
    RunList(global);
  });

  auto show_args = std::make_shared<KindFlags>();
  CLI::App* show = catalog->add_subcommand("show", "Show one catalog's header and blocks");
  show_args->AddTo(show, " (required)");
  show->callback([&global, show_args] { RunShow(global, *show_args); });

  auto match_args = std::make_shared<MatchArgs>();
  CLI::App* match = catalog->add_subcommand(
      "match", "Count the pages of IMAGE the catalog covers: the expected saving");
  match_args->kind.AddTo(match, " (required)");
  match->add_option("IMAGE", match_args->image, "Guest RAM file or saved migration stream");
  match->callback([&global, match_args] { RunMatch(global, *match_args); });

  auto export_args = std::make_shared<FileArgs>();
  CLI::App* exp = catalog->add_subcommand("export", "Write one catalog to FILE");
  export_args->kind.AddTo(exp, " (required)");
  exp->add_option("FILE", export_args->file, "Destination file (replaced atomically)");
  exp->callback([&global, export_args] { RunExport(global, *export_args); });

  auto import_args = std::make_shared<FileArgs>();
  CLI::App* imp = catalog->add_subcommand(
      "import", "Verify the catalog in FILE and store it under the key it records");
  import_args->kind.AddTo(imp, " (optional: must match the file)");
  imp->add_option("FILE", import_args->file, "Catalog file written by `catalog export`");
  imp->callback([&global, import_args] { RunImport(global, *import_args); });

  auto remove_args = std::make_shared<KindFlags>();
  CLI::App* remove = catalog->add_subcommand("remove", "Delete one stored catalog");
  remove_args->AddTo(remove, " (required)");
  remove->callback([&global, remove_args] { RunRemove(global, *remove_args); });
}

}  // namespace

ESCDR_REGISTER_COMMAND(RegisterCatalog);

}  // namespace escdr::cli
