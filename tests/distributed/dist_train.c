/* A C program that trains through libolm's C API, data-parallel when a launcher started it
 * (torchrun --no-python, srun): the process group comes from the environment, and
 * olm_trainer_fit() gives each rank its slice of every global batch. Rank 0 writes the train
 * config's metrics_path; the ranks' losses must equal one process's (dist_cli_test.sh).
 * usage: dist_train TRAIN_CONFIG_JSON TOKEN_FILE */
#include <olm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(olm_error* err, const char* what) {
    fprintf(stderr, "dist_train: %s: %s\n", what, olm_error_message(err));
    int code = olm_error_code(err) == OLM_ERR_DISTRIBUTED ? 3 : 1;
    olm_error_free(err);
    return code;
}

static char* read_file(const char* path, size_t* len) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char* text = malloc((size_t)n + 1);
    if (text && fread(text, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    if (text) text[n] = 0;
    *len = (size_t)n;
    return text;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dist_train TRAIN_CONFIG_JSON TOKEN_FILE\n");
        return 2;
    }
    size_t len = 0;
    char* text = read_file(argv[1], &len);
    if (!text) {
        fprintf(stderr, "dist_train: cannot read %s\n", argv[1]);
        return 1;
    }
    olm_error* err;
    olm_train_config* tcfg = NULL;
    olm_config* cfg = NULL;
    olm_model* model = NULL;
    olm_trainer* trainer = NULL;
    olm_dataset* data = NULL;
    olm_dist* dist = NULL;
    int code = 0;
    if ((err = olm_train_config_from_json(text, len, &tcfg))) { code = fail(err, "train config"); goto done; }
    if ((err = olm_train_config_model(tcfg, &cfg))) { code = fail(err, "model config"); goto done; }
    if ((err = olm_model_create(cfg, "cpu", NULL, &model))) { code = fail(err, "model"); goto done; }
    if ((err = olm_trainer_create(model, tcfg, &trainer))) { code = fail(err, "trainer"); goto done; }
    const char* world = getenv("WORLD_SIZE");
    if (world && atoi(world) > 1) {
        olm_dist_options opts;
        olm_dist_options_init(&opts); /* rank, world size and address from torchrun's environment */
        opts.timeout_seconds = 60;
        if ((err = olm_dist_create(&opts, &dist))) { code = fail(err, "process group"); goto done; }
        if ((err = olm_trainer_set_dist(trainer, dist))) { code = fail(err, "set dist"); goto done; }
        olm_dist_info info;
        info.struct_size = sizeof info;
        if ((err = olm_dist_info_get(dist, &info))) { code = fail(err, "dist info"); goto done; }
        fprintf(stderr, "dist_train: rank %lld of %lld\n", (long long)info.rank, (long long)info.world_size);
    }
    olm_dataset_options dopts;
    olm_dataset_options_init(&dopts);
    dopts.sequence_length = 16;
    dopts.vocab_size = 264;
    const char* paths[] = {argv[2]};
    if ((err = olm_dataset_from_files(paths, 1, &dopts, &data))) { code = fail(err, "dataset"); goto done; }
    if ((err = olm_trainer_fit(trainer, data, NULL, NULL))) { code = fail(err, "fit"); goto done; }
    if (dist && (err = olm_dist_shutdown(dist))) { code = fail(err, "shutdown"); goto done; }
done:
    olm_dataset_free(data);
    olm_trainer_free(trainer);
    olm_dist_free(dist);
    olm_model_free(model);
    olm_config_free(cfg);
    olm_train_config_free(tcfg);
    free(text);
    return code;
}
