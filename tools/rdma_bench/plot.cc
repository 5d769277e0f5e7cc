// rdma_bench's chart: a gnuplot script of latency and bandwidth against
// size.

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "tools/rdma_bench/report.h"

namespace demi::bench {
namespace {

// "64 B", "1 KiB", "16 MiB", "1 GiB": a size as a tic label.
std::string SizeTicLabel(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (unit < 4 && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++unit;
  }
  return absl::StrCat(bytes, " ", kUnits[unit]);
}

// "1 us", "10 us", "100 us", "1 ms", ..., "10 s": a time in microseconds.
std::string MicrosTicLabel(double micros) {
  if (micros < 1000) return absl::StrFormat("%g us", micros);
  if (micros < 1e6) return absl::StrFormat("%g ms", micros / 1e3);
  return absl::StrFormat("%g s", micros / 1e6);
}

// "1 MiB/s", "10 MiB/s", "100 MiB/s", then GiB/s.
std::string BandwidthTicLabel(double mib_per_s) {
  if (mib_per_s < 1024) return absl::StrFormat("%g MiB/s", mib_per_s);
  return absl::StrFormat("%g GiB/s", mib_per_s / 1024);
}

// gnuplot's "set xtics (...)" / "set ytics (...)" with one labelled tic at
// each value.
std::string Tics(const char* axis, const std::vector<double>& values,
                 std::string (*label)(double)) {
  std::vector<std::string> tics;
  for (double value : values) {
    tics.push_back(absl::StrFormat("\"%s\" %.17g", label(value), value));
  }
  return absl::StrCat("set ", axis, "tics (", absl::StrJoin(tics, ", "), ")\n");
}

// Powers of ten spanning [low, high] (both > 0), one below and one above.
std::vector<double> Decades(double low, double high) {
  std::vector<double> values;
  for (double v = std::pow(10, std::floor(std::log10(low)));
       v <= high * 10 && values.size() < 16; v *= 10) {
    values.push_back(v);
  }
  return values;
}

}  // namespace

std::string GnuplotScript(const std::vector<Row>& rows,
                          const std::string& png_path) {
  // Series name -> (size, value) points.
  std::map<std::string, std::map<uint64_t, double>> series;
  for (const Row& row : rows) {
    std::string memory = MemoryLabel(row.memory);
    if (row.workload == RowWorkload::kLatency) {
      if (row.value) series["lat demi " + memory][row.size] = *row.value;
      if (row.baseline && row.baseline->value) {
        series["lat ib_send_lat"][row.size] = *row.baseline->value;
      }
    } else if (row.workload == RowWorkload::kBandwidth) {
      if (row.value) series["bw demi " + memory][row.size] = *row.value;
      if (row.baseline && row.baseline->value) {
        series["bw ib_send_bw"][row.size] = *row.baseline->value;
      }
      if (row.read_baseline && row.read_baseline->value) {
        series["bw ib_read_bw"][row.size] = *row.read_baseline->value;
      }
    }
  }
  std::string out;
  int block = 0;
  std::vector<std::string> lat_plots, bw_plots;
  for (const auto& [name, points] : series) {
    std::string data = absl::StrCat("$d", block++);
    absl::StrAppend(&out, data, " << EOD\n");
    for (const auto& [size, value] : points) {
      absl::StrAppend(&out, size, " ", absl::StrFormat("%.6g", value), "\n");
    }
    out += "EOD\n";
    std::string plot =
        absl::StrCat(data, " using 1:2 with linespoints title ",
                     JsonString(name.substr(name.find(' ') + 1)));
    (name.rfind("lat", 0) == 0 ? lat_plots : bw_plots).push_back(plot);
  }
  absl::StrAppend(&out, "set terminal pngcairo size 1280,520 noenhanced\n",
                  "set output ", JsonString(png_path), "\n",
                  "set multiplot layout 1,2 title \"rdma_bench: demi_* vs "
                  "raw verbs (perftest)\"\n",
                  "set logscale x 2\nset logscale y 10\n",
                  "set grid\nset key top left\nset xlabel \"message size\"\n");
  // Tics that read as units: sizes as 64 B, 1 KiB, 1 MiB (the sizes
  // measured, at most one in two when there are many), times as 1 us,
  // 1 ms, 1 s, bandwidth as MiB/s and GiB/s.
  std::vector<double> sizes;
  for (const auto& [name, points] : series) {
    for (const auto& [size, value] : points) sizes.push_back(size);
  }
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  if (sizes.size() > 10) {
    std::vector<double> every_other;
    for (size_t i = 0; i < sizes.size(); i += 2)
      every_other.push_back(sizes[i]);
    sizes = every_other;
  }
  if (!sizes.empty()) {
    out += Tics("x", sizes, [](double bytes) {
      return SizeTicLabel(static_cast<uint64_t>(bytes));
    });
    // A margin each side, so the end tics (and their points) show.
    absl::StrAppend(&out, "set xrange [", sizes.front() / 1.5, ":",
                    sizes.back() * 1.5, "]\n");
  }
  auto range = [&](bool latency) -> std::vector<double> {
    double low = 0, high = 0;
    for (const auto& [name, points] : series) {
      if ((name.rfind("lat", 0) == 0) != latency) continue;
      for (const auto& [size, value] : points) {
        if (value <= 0) continue;
        low = low == 0 ? value : std::min(low, value);
        high = std::max(high, value);
      }
    }
    return low > 0 ? Decades(low, high) : std::vector<double>{};
  };
  auto panel = [&](const char* title, const char* ylabel,
                   const std::vector<std::string>& plots,
                   const std::vector<double>& ytics,
                   std::string (*label)(double)) {
    absl::StrAppend(&out, "set title \"", title, "\"\nset ylabel \"", ylabel,
                    "\"\n");
    if (ytics.empty()) {
      out += "set ytics auto\nset yrange [*:*]\n";
    } else {
      out += Tics("y", ytics, label);
      absl::StrAppend(&out, "set yrange [", ytics.front() / 1.02, ":",
                      ytics.back() * 1.02, "]\n");
    }
    if (plots.empty()) {
      out +=
          "set label 1 \"no data\" at graph 0.5,0.5 center\n"
          "plot [1:2] [1:2] NaN notitle\nunset label 1\n";
    } else {
      absl::StrAppend(&out, "plot ", absl::StrJoin(plots, ", \\\n     "), "\n");
    }
  };
  panel("latency (median, one way)", "time", lat_plots, range(true),
        MicrosTicLabel);
  panel("bandwidth", "bandwidth", bw_plots, range(false), BandwidthTicLabel);
  out += "unset multiplot\n";
  return out;
}

}  // namespace demi::bench
