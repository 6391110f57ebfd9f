/* olm.h must compile as strict C99 on its own (-Wall -Wextra -pedantic -Werror). */
#include "olm.h"

int headertest_c(void);
int headertest_c(void) {
    olm_loss_options options;
    olm_loss_options_init(&options);
    return (int)options.loss_reduction + OLM_VERSION_MAJOR;
}
