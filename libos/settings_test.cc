#include "libos/settings.h"

#include <cerrno>
#include <map>
#include <string>

#include "common/errno_status.h"
#include "gtest/gtest.h"

namespace demi::libos {
namespace {

// An environment for OptionsFromEnvironment: only what the test sets.
class Environment {
 public:
  Environment& Set(const std::string& name, const std::string& value) {
    values_[name] = value;
    return *this;
  }
  absl::StatusOr<LibOSOptions> Parse() const {
    return OptionsFromEnvironment([this](const char* name) -> const char* {
      auto it = values_.find(name);
      return it == values_.end() ? nullptr : it->second.c_str();
    });
  }

 private:
  std::map<std::string, std::string> values_;
};

TEST(SettingsTest, NothingSetGivesTheDefaults) {
  absl::StatusOr<LibOSOptions> options = Environment().Parse();
  ASSERT_TRUE(options.ok()) << options.status();
  const LibOSOptions defaults;
  EXPECT_EQ(options->region_cache_enabled, defaults.region_cache_enabled);
  EXPECT_EQ(options->connection.eager_limit, defaults.connection.eager_limit);
  EXPECT_EQ(options->connection.rendezvous_threshold, 64u * 1024);
  EXPECT_EQ(options->max_connections, defaults.max_connections);
  EXPECT_EQ(options->spin, LibOSOptions::kDefaultSpin);
  EXPECT_EQ(options->keepalive, defaults.keepalive);
}

TEST(SettingsTest, EveryVariableSetsItsOption) {
  absl::StatusOr<LibOSOptions> options =
      Environment()
          .Set("DEMI_MR_CACHE", "0")
          .Set("DEMI_MR_CACHE_MAX_BYTES", "1048576")
          .Set("DEMI_MR_CACHE_MAX_REGIONS", "7")
          .Set("DEMI_EAGER_LIMIT", "4096")
          .Set("DEMI_RENDEZVOUS_THRESHOLD", "16384")
          .Set("DEMI_LARGE_POOL_MAX_BYTES", "33554432")
          .Set("DEMI_RENDEZVOUS_QUOTA", "8388608")
          .Set("DEMI_DGRAM_ROUTE_TTL_MS", "0")
          .Set("DEMI_COALESCE_SENDS", "0")
          .Set("DEMI_ACK_TIMEOUT", "14")
          .Set("DEMI_RETRY_COUNT", "7")
          .Set("DEMI_KEEPALIVE_MS", "250")
          .Set("DEMI_CLOSE_TIMEOUT_MS", "1500")
          .Set("DEMI_STALL_TIMEOUT_MS", "0")
          .Set("DEMI_MAX_CONNECTIONS", "12")
          .Set("DEMI_SPIN_US", "inf")
          .Set("DEMI_LOG_LEVEL", "debug")
          .Parse();
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FALSE(options->region_cache_enabled);
  EXPECT_EQ(options->region_cache.max_pinned_bytes, 1048576u);
  EXPECT_EQ(options->region_cache.max_regions, 7u);
  EXPECT_EQ(options->connection.eager_limit, 4096u);
  EXPECT_EQ(options->connection.rendezvous_threshold, 16384u);
  EXPECT_EQ(options->large_pool.max_bytes, 33554432u);
  EXPECT_EQ(options->connection.rendezvous_quota, 8388608u);
  EXPECT_EQ(options->datagram_route_ttl, absl::ZeroDuration());
  EXPECT_FALSE(options->connection.coalesce_sends);
  EXPECT_EQ(options->connection.ack_timeout, 14);
  EXPECT_EQ(options->connection.retry_count, 7);
  EXPECT_EQ(options->keepalive, absl::Milliseconds(250));
  EXPECT_EQ(options->close_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(options->stall_timeout, absl::ZeroDuration());
  EXPECT_EQ(options->max_connections, 12u);
  EXPECT_EQ(options->spin, absl::InfiniteDuration());
}

// Every variable refuses a value without its form, naming the variable, the
// value and the form: never a silent default.
TEST(SettingsTest, BadValuesAreErrorsNamingTheVariable) {
  const std::map<std::string, std::vector<std::string>> bad = {
      {"DEMI_MR_CACHE", {"", "yes", "2", " 1", "on"}},
      {"DEMI_MR_CACHE_MAX_BYTES", {"0", "-1", "1e9", "12 ", "0x10", "1GiB"}},
      {"DEMI_MR_CACHE_MAX_REGIONS", {"0", "abc", "+5"}},
      {"DEMI_EAGER_LIMIT", {"0", "1048577", "99999999999999999999999"}},
      {"DEMI_RENDEZVOUS_THRESHOLD", {"0", "4294967296"}},
      {"DEMI_LARGE_POOL_MAX_BYTES", {"0", "2G"}},
      {"DEMI_RENDEZVOUS_QUOTA", {"0", "18446744073709551616"}},
      {"DEMI_DGRAM_ROUTE_TTL_MS", {"-1", "5s", "1.5"}},
      {"DEMI_COALESCE_SENDS", {"true", "00"}},
      {"DEMI_ACK_TIMEOUT", {"32", "-1", "x"}},
      {"DEMI_RETRY_COUNT", {"8", "seven"}},
      {"DEMI_KEEPALIVE_MS", {"", "1000ms"}},
      {"DEMI_CLOSE_TIMEOUT_MS", {"-5", "9223372036854775807"}},
      {"DEMI_STALL_TIMEOUT_MS", {"never"}},
      {"DEMI_MAX_CONNECTIONS", {"0", "4294967296"}},
      {"DEMI_SPIN_US", {"", "1.5", "12us", "Inf"}},
      {"DEMI_LOG_LEVEL", {"", "verbose", "WARNING"}},
  };
  ASSERT_EQ(bad.size(), Settings().size()) << "a variable has no bad values";
  for (const auto& [name, values] : bad) {
    for (const std::string& value : values) {
      SCOPED_TRACE(name + "=" + value);
      absl::StatusOr<LibOSOptions> options =
          Environment().Set(name, value).Parse();
      ASSERT_FALSE(options.ok());
      EXPECT_EQ(ErrnoFromStatus(options.status()), EINVAL);
      const std::string message(options.status().message());
      EXPECT_NE(message.find(name + "=\"" + value + "\": must be "),
                std::string::npos)
          << message;
    }
  }
}

TEST(SettingsTest, EveryVariableHasANameFormAndParser) {
  for (const Setting& setting : Settings()) {
    SCOPED_TRACE(setting.name);
    EXPECT_EQ(std::string(setting.name).rfind("DEMI_", 0), 0u);
    EXPECT_NE(std::string(setting.form), "");
    ASSERT_NE(setting.apply, nullptr);
  }
}

TEST(ParseSpinMicrosTest, CountsInfinityAndNegatives) {
  absl::Duration spin = absl::ZeroDuration();
  EXPECT_TRUE(ParseSpinMicros("250", &spin));
  EXPECT_EQ(spin, absl::Microseconds(250));
  EXPECT_TRUE(ParseSpinMicros("0", &spin));
  EXPECT_EQ(spin, absl::ZeroDuration());
  EXPECT_TRUE(ParseSpinMicros("inf", &spin));
  EXPECT_EQ(spin, absl::InfiniteDuration());
  spin = absl::ZeroDuration();
  EXPECT_TRUE(ParseSpinMicros("infinite", &spin));
  EXPECT_EQ(spin, absl::InfiniteDuration());
  spin = absl::ZeroDuration();
  EXPECT_TRUE(ParseSpinMicros("-1", &spin));
  EXPECT_EQ(spin, absl::InfiniteDuration());
}

TEST(ParseSpinMicrosTest, RefusesAnythingElseAndKeepsTheValue) {
  absl::Duration spin = absl::Milliseconds(1);
  for (const char* bad : {"", "abc", "12us", "1.5", " 7", "7 ", "0x10",
                          "99999999999999999999999", "Inf", "-", "--1"}) {
    EXPECT_FALSE(ParseSpinMicros(bad, &spin)) << bad;
    EXPECT_EQ(spin, absl::Milliseconds(1)) << bad;
  }
  EXPECT_FALSE(ParseSpinMicros(nullptr, &spin));
}

}  // namespace
}  // namespace demi::libos
