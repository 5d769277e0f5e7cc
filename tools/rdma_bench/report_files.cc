// rdma_bench's machine-readable output: JSON and CSV (the same fields per
// row), and writing a file.

#include <cmath>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "tools/rdma_bench/report.h"

namespace demi::bench {
namespace {

// JSON has no infinity or NaN: such a figure is written as no figure.
std::string JsonNumber(const std::optional<double>& value) {
  return value.has_value() && std::isfinite(*value)
             ? absl::StrFormat("%.6g", *value)
             : "null";
}

std::string JsonReason(const std::string& reason) {
  return reason.empty() ? "null" : JsonString(reason);
}

std::string CsvField(absl::string_view text) {
  if (text.find_first_of(",\"\n") == absl::string_view::npos) {
    return std::string(text);
  }
  std::string out = "\"";
  for (char ch : text) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

std::string CsvNumber(const std::optional<double>& value) {
  return value.has_value() && std::isfinite(*value)
             ? absl::StrFormat("%.6g", *value)
             : "";
}

// The fields of a row, in order, as (name, JSON text, CSV text).
struct Field {
  std::string name, json, csv;
};

// `rows` is the table `row` is in (for its application-memory cost).
std::vector<Field> Fields(const Row& row, const std::vector<Row>& rows,
                          const RunInfo& info) {
  const bool latency = IsLatencyWorkload(row.workload);
  auto number = [](std::string name, const std::optional<double>& value) {
    return Field{std::move(name), JsonNumber(value), CsvNumber(value)};
  };
  auto text = [](std::string name, const std::string& value) {
    return Field{std::move(name), JsonReason(value), CsvField(value)};
  };
  auto integer = [](std::string name, uint64_t value) {
    return Field{std::move(name), absl::StrCat(value), absl::StrCat(value)};
  };
  std::vector<Field> fields = {
      Field{"workload", JsonString(WorkloadName(row.workload)),
            WorkloadName(row.workload)},
      integer("size", row.size),
      Field{"memory", JsonString(MemoryLabel(row.memory)),
            MemoryLabel(row.memory)},
      integer("connections", row.connections),
      integer("window", row.window),
      integer("iterations", row.iterations),
      number("seconds",
             row.value ? std::optional<double>(row.seconds) : std::nullopt),
      number("value", row.value),
      Field{"unit", JsonString(UnitOf(row.workload)), UnitOf(row.workload)},
      number("median_us", row.median_us),
      number("p99_us", row.p99_us),
      number("p999_us", row.p999_us),
      number("mean_us", row.mean_us),
      number("mpps",
             row.workload == RowWorkload::kMsgRate ? row.value : std::nullopt),
      number("mib_per_s", row.workload == RowWorkload::kBandwidth
                              ? row.value
                              : std::nullopt),
      text("reason", row.value ? std::string() : row.reason),
      number("app_memory_cost", RowAppMemoryCost(row, rows)),
  };
  if (info.baseline) {
    const Baseline none;
    const Baseline& b = row.baseline ? *row.baseline : none;
    const Baseline& r = row.read_baseline ? *row.read_baseline : none;
    fields.push_back(text("baseline_tool", b.tool));
    fields.push_back(number("baseline_value", b.value));
    fields.push_back(
        number("baseline_p99_us", latency ? b.p99_us : std::nullopt));
    fields.push_back(
        number("baseline_p999_us", latency ? b.p999_us : std::nullopt));
    fields.push_back(text("baseline_reason", b.value ? "" : b.reason));
    fields.push_back(number("ratio", RowRatio(row)));
    fields.push_back(text("read_bw_tool", r.tool));
    fields.push_back(number("read_bw_mib_per_s", r.value));
    fields.push_back(text("read_bw_reason", r.value ? "" : r.reason));
    fields.push_back(
        number("read_bw_ratio", Ratio(row.value, row.read_baseline)));
  }
  return fields;
}

}  // namespace

std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (char ch : text) {
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          out += absl::StrFormat("\\u%04x", ch);
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string FormatJson(const std::vector<Row>& rows, const RunInfo& info) {
  std::string out = "{\n  \"tool\": \"rdma_bench\",\n  \"run\": {";
  absl::StrAppend(&out, "\"connections\": ", info.connections,
                  ", \"window\": ", info.window,
                  ", \"baseline\": ", info.baseline ? "true" : "false",
                  ", \"device\": ", JsonString(info.device),
                  ", \"server_host\": ", JsonString(info.server_host),
                  ", \"ratio\": ",
                  JsonString("demi / verbs; latency: below 1 is better; "
                             "msgrate and bandwidth: above 1 is better"),
                  ", \"notes\": ", JsonString(info.notes), "},\n");
  out += "  \"rows\": [";
  for (size_t i = 0; i < rows.size(); ++i) {
    out += i == 0 ? "\n    {" : ",\n    {";
    std::vector<Field> fields = Fields(rows[i], rows, info);
    for (size_t f = 0; f < fields.size(); ++f) {
      absl::StrAppend(&out, f == 0 ? "" : ", ", "\"", fields[f].name,
                      "\": ", fields[f].json);
    }
    out += "}";
  }
  out += "\n  ]";
  if (!info.peers.empty()) {
    out += ",\n  \"peers\": [";
    for (size_t i = 0; i < info.peers.size(); ++i) {
      const PeerRow& peer = info.peers[i];
      absl::StrAppend(
          &out, i == 0 ? "\n    {" : ",\n    {",
          "\"tool\": ", JsonString(peer.tool),
          ", \"workload\": ", JsonString(WorkloadName(peer.workload)),
          ", \"size\": ", peer.size, ", \"value\": ", JsonNumber(peer.value),
          ", \"unit\": ", JsonString(UnitOf(peer.workload)),
          ", \"ratio\": ", JsonNumber(PeerRatio(peer, rows)),
          ", \"reason\": ", JsonReason(peer.value ? "" : peer.reason), "}");
    }
    out += "\n  ]";
  }
  out += "\n}\n";
  return out;
}

std::string FormatCsv(const std::vector<Row>& rows, const RunInfo& info) {
  std::string out;
  std::vector<Field> header = Fields(Row{}, rows, info);
  for (size_t f = 0; f < header.size(); ++f) {
    absl::StrAppend(&out, f == 0 ? "" : ",", header[f].name);
  }
  out += "\n";
  for (const Row& row : rows) {
    std::vector<Field> fields = Fields(row, rows, info);
    for (size_t f = 0; f < fields.size(); ++f) {
      absl::StrAppend(&out, f == 0 ? "" : ",", fields[f].csv);
    }
    out += "\n";
  }
  return out;
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot write ", path));
  file << text;
  file.close();
  if (!file) return absl::DataLossError(absl::StrCat("writing ", path));
  return absl::OkStatus();
}

}  // namespace demi::bench
