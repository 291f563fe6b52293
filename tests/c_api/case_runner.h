// The case table of the host-only C API validation programs (validation_test.cpp,
// merge_validation_test.cpp, append_validation_test.cpp) and the loop that runs it.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "forge_flash/flash_api.h"

struct Case {
  const char* name;
  std::function<ff_status()> call;
  ff_status expect;
  const char* message;  // substring of ff_last_error(); "" for success
};

// Runs every case and prints a PASS or FAIL line for it: the status expected, a message that
// contains the case's; a refused call launches nothing (`launches` counts the stubs'
// launches), an accepted one leaves no message and, with `one_launch`, launched exactly once.
inline void run_cases(const std::vector<Case>& cases, const int& launches, bool one_launch, int& passed, int& failed) {
  for (const Case& c : cases) {
    const int launches_before = launches;
    const ff_status got = c.call();
    const std::string message = ff_last_error();
    bool ok = got == c.expect && message.find(c.message) != std::string::npos;
    if (c.expect != FF_OK && launches != launches_before) ok = false;  // refused calls launch nothing
    if (c.expect == FF_OK && (!message.empty() || (one_launch && launches != launches_before + 1))) ok = false;
    std::printf("%s %s (status %d, message \"%s\")\n", ok ? "PASS" : "FAIL", c.name, static_cast<int>(got),
                message.c_str());
    ok ? ++passed : ++failed;
  }
}
