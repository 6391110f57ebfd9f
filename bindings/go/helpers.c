#include "helpers.h"

#include "_cgo_export.h"

olm_error* olm_go_generate(olm_model* model, const olm_tensor* prompt, olm_generate_options* options,
                           uintptr_t handle, olm_tensor** out) {
    if (handle != 0) {
        options->on_token = olmGoOnToken;
        options->user_data = (void*)handle;
    }
    return olm_model_generate(model, prompt, options, out);
}

olm_error* olm_go_fit(olm_trainer* trainer, const olm_dataset* data, olm_fit_options* options,
                      uintptr_t handle, olm_eval_metrics* out) {
    if (handle != 0) {
        options->on_step = (olm_metrics_callback)olmGoOnStep;
        options->on_log = (olm_log_callback)olmGoOnLog;
        options->user_data = (void*)handle;
    }
    return olm_trainer_fit(trainer, data, options, out);
}
