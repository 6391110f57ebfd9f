/*
 * A plain C99 program on libolm: build a model from a JSON config file, run a forward pass
 * and a loss, report every error, free everything.
 *
 * Build against an installed olm:
 *   cc -std=c99 olm_example.c $(pkg-config --cflags --libs olm) -o olm_example
 * or with CMake: find_package(olm CONFIG REQUIRED) and link olm::olm (see CMakeLists.txt).
 *
 * Usage: olm_example CONFIG.json
 */
#include <olm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char* read_file(const char* path, size_t* size) {
    FILE* f = fopen(path, "rb");
    char* text = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        text = malloc((size_t)n + 1);
        if (text && fread(text, 1, (size_t)n, f) == (size_t)n) {
            text[n] = '\0';
            *size = (size_t)n;
        } else {
            free(text);
            text = NULL;
        }
    }
    fclose(f);
    return text;
}

/* Prints and frees an error; returns 1 when there was one. */
static int failed(olm_error* err, const char* what) {
    if (!err) return 0;
    fprintf(stderr, "olm_example: %s failed (code %d): %s\n", what, (int)olm_error_code(err),
            olm_error_message(err));
    olm_error_free(err);
    return 1;
}

int main(int argc, char** argv) {
    enum { T = 8 };
    int status = 1;
    size_t size = 0;
    char* json = NULL;
    olm_config* config = NULL;
    olm_model* model = NULL;
    olm_tensor *ids = NULL, *labels = NULL, *logits = NULL;
    olm_loss_result loss;
    olm_loss_options loss_options;
    int64_t tokens[T] = {72, 101, 108, 108, 111, 33, 32, 10};
    int64_t targets[T];
    int64_t shape[2] = {1, T};
    int64_t total = 0, non_embedding = 0, dims[3] = {0, 0, 0};
    float* values = NULL;
    size_t nbytes = 0;
    int i;

    memset(&loss, 0, sizeof loss);
    loss.struct_size = sizeof loss;
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG.json\n", argv[0]);
        return 2;
    }
    json = read_file(argv[1], &size);
    if (!json) {
        fprintf(stderr, "olm_example: cannot read %s\n", argv[1]);
        return 1;
    }
    for (i = 0; i < T; ++i) targets[i] = i + 1 < T ? tokens[i + 1] : -100;

    if (failed(olm_config_from_json(json, size, &config), "olm_config_from_json")) goto done;
    if (failed(olm_config_num_params(config, &total, &non_embedding), "olm_config_num_params")) goto done;
    if (failed(olm_model_create(config, "cpu", NULL, &model), "olm_model_create")) goto done;
    if (failed(olm_tensor_create(OLM_DTYPE_INT64, shape, 2, tokens, sizeof tokens, &ids), "olm_tensor_create")) goto done;
    if (failed(olm_tensor_create(OLM_DTYPE_INT64, shape, 2, targets, sizeof targets, &labels), "olm_tensor_create")) goto done;
    if (failed(olm_model_forward(model, ids, NULL, &logits), "olm_model_forward")) goto done;
    if (failed(olm_tensor_shape(logits, dims, 3), "olm_tensor_shape")) goto done;
    if (failed(olm_tensor_nbytes(logits, &nbytes), "olm_tensor_nbytes")) goto done;
    values = malloc(nbytes);
    if (!values) goto done;
    if (failed(olm_tensor_copy_to_host(logits, values, nbytes), "olm_tensor_copy_to_host")) goto done;
    olm_loss_options_init(&loss_options);
    loss_options.z_loss_multiplier = 1e-4;
    if (failed(olm_model_loss(model, ids, labels, &loss_options, &loss), "olm_model_loss")) goto done;

    printf("olm %s: %lld parameters (%lld non-embedding)\n", olm_version(), (long long)total,
           (long long)non_embedding);
    printf("logits (%lld, %lld, %lld), first %.6f\n", (long long)dims[0], (long long)dims[1],
           (long long)dims[2], values[0]);
    printf("loss %.6f = ce %.6f + z %.6f\n", loss.loss_value, loss.ce_loss_value, loss.z_loss_value);
    status = 0;

done:
    olm_loss_result_free(&loss);
    free(values);
    olm_tensor_free(logits);
    olm_tensor_free(labels);
    olm_tensor_free(ids);
    olm_model_free(model);
    olm_config_free(config);
    free(json);
    return status;
}
