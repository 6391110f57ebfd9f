// C glue for callbacks: Go passes a runtime/cgo.Handle as a uintptr; these set the
// exported Go trampolines as the C callbacks.
#ifndef OLM_GO_HELPERS_H
#define OLM_GO_HELPERS_H
#include <stdint.h>
#include <olm.h>

olm_error* olm_go_generate(olm_model* model, const olm_tensor* prompt, olm_generate_options* options,
                           uintptr_t handle, olm_tensor** out);
olm_error* olm_go_fit(olm_trainer* trainer, const olm_dataset* data, olm_fit_options* options,
                      uintptr_t handle, olm_eval_metrics* out);
#endif
