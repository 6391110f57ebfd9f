// olm.h must compile as strict C++17 on its own (-Wall -Wextra -pedantic -Werror).
#include "olm.h"

int headertest_cxx() {
  olm_generate_options options;
  olm_generate_options_init(&options);
  return static_cast<int>(options.max_new_tokens) + OLM_VERSION_MAJOR;
}
