// The documentation of the settings matches the parser: the README's
// settings table (argv[1]) lists exactly the variables libos/settings.h
// reads (plus the tests' own, marked "not the library's"), and demi(7)
// (argv[2]) names each of them.

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "libos/settings.h"

namespace demi::libos {
namespace {

const char* readme_path = nullptr;
const char* manual_path = nullptr;

std::string ReadFile(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The DEMI_* names in the first cell of each row of the README's table.
std::set<std::string> ReadmeTableNames() {
  std::set<std::string> names;
  std::istringstream lines(ReadFile(readme_path));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("| `DEMI_", 0) != 0) continue;
    // Each `DEMI_...` quoted in the first cell.
    const std::string first = line.substr(0, line.find('|', 1));
    for (size_t at = first.find("`DEMI_"); at != std::string::npos;
         at = first.find("`DEMI_", at + 1)) {
      const size_t end = first.find('`', at + 1);
      if (end == std::string::npos) break;
      names.insert(first.substr(at + 1, end - at - 1));
    }
  }
  return names;
}

std::set<std::string> LibraryNames() {
  std::set<std::string> names;
  for (const Setting& setting : Settings()) names.insert(setting.name);
  return names;
}

TEST(SettingsDocTest, ReadmeTableListsExactlyTheLibrarysVariables) {
  // Read by the tests and tools, not the library (their row says so).
  const std::set<std::string> not_the_librarys = {"DEMI_RDMA_ADDR",
                                                  "DEMI_RDMA_DEVICE"};
  const std::set<std::string> table = ReadmeTableNames();
  ASSERT_FALSE(table.empty()) << "no settings table in " << readme_path;
  for (const std::string& name : LibraryNames()) {
    EXPECT_TRUE(table.count(name)) << name << " is read but not in the README";
  }
  for (const std::string& name : table) {
    EXPECT_TRUE(LibraryNames().count(name) || not_the_librarys.count(name))
        << name << " is in the README's table but the library never reads it";
  }
}

TEST(SettingsDocTest, TheManualNamesEveryVariable) {
  const std::string manual = ReadFile(manual_path);
  ASSERT_FALSE(manual.empty()) << manual_path;
  for (const std::string& name : LibraryNames()) {
    // groff escapes nothing in these names, so they appear as written.
    EXPECT_NE(manual.find(name), std::string::npos)
        << name << " is not in demi(7)";
  }
}

}  // namespace
}  // namespace demi::libos

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (argc != 3) {
    fprintf(stderr, "usage: %s README.md demi.7\n", argv[0]);
    return 2;
  }
  demi::libos::readme_path = argv[1];
  demi::libos::manual_path = argv[2];
  return RUN_ALL_TESTS();
}
