/* Writes the seed files for fuzz/fuzz_nnz.c: small valid .nnz models covering every op.
 *
 *   gcc -std=c11 -D_DEFAULT_SOURCE -Iinclude -Isrc fuzz/make_corpus.c build/libnnzip.a \
 *       -fopenmp -L/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lz -lm -o /tmp/make_corpus
 *   /tmp/make_corpus fuzz/corpus/nnz */
#include <stdio.h>
#include <string.h>

#include "nnzip/format.h"
#include "nnzip/train.h"

static int save(nz_model *m, const nz_meta *meta, const char *dir, const char *file) {
    char path[1024];
    nz_error err;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    nz_rng rng;
    nz_rng_seed(&rng, 1);
    nz_model_init_params(m, &rng);
    nz_status st = nz_save(m, meta, path, &err);
    if (st) fprintf(stderr, "%s\n", err.msg);
    nz_model_free(m);
    return st ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "fuzz/corpus/nnz";
    nz_error err;
    nz_model m;
    int bad = 0;
    static nz_meta meta; /* static: 40 KB */

    /* mlp: flatten -> dense -> relu -> dense */
    if (nz_model_init(&m, "mlp", (nz_shape){1, 2, 2}, 2, &err)) return 1;
    int x = nz_model_add_flatten(&m, "flatten", 0, &err);
    if (x >= 0) x = nz_model_add_dense(&m, "fc1", x, 3, &err);
    if (x >= 0) x = nz_model_add_relu(&m, "relu1", x, &err);
    if (x >= 0) x = nz_model_add_dense(&m, "fc2", x, 2, &err);
    bad += x < 0 || save(&m, NULL, dir, "mlp.nnz");

    /* sel: select (3 of 4 features, binary16 feature numbers) -> dense */
    if (nz_model_init(&m, "sel", (nz_shape){1, 2, 2}, 2, &err)) return 1;
    x = nz_model_add_select(&m, "fc1_in", 0, (const int[]){0, 2, 3}, 3, &err);
    if (x >= 0) x = nz_model_add_dense(&m, "fc1", x, 2, &err);
    bad += x < 0 || save(&m, NULL, dir, "sel.nnz");

    /* cnn: conv -> pool -> flatten -> dense */
    if (nz_model_init(&m, "cnn", (nz_shape){1, 4, 4}, 2, &err)) return 1;
    x = nz_model_add_conv2d(&m, "conv1", 0, 2, 3, 1, 0, &err);
    if (x >= 0) x = nz_model_add_maxpool(&m, "pool1", x, 2, 2, &err);
    if (x >= 0) x = nz_model_add_flatten(&m, "flatten", x, &err);
    if (x >= 0) x = nz_model_add_dense(&m, "fc1", x, 2, &err);
    bad += x < 0 || save(&m, NULL, dir, "cnn.nnz");

    /* every op, padding and stride, preprocessing and meta facts */
    if (nz_model_init(&m, "all", (nz_shape){2, 5, 5}, 3, &err)) return 1;
    m.pre.mean[0] = 0.5f;
    m.pre.std[1] = 0.25f;
    x = nz_model_add_conv2d(&m, "conv1", 0, 2, 3, 2, 1, &err);
    if (x >= 0) x = nz_model_add_relu(&m, "relu1", x, &err);
    if (x >= 0) x = nz_model_add_maxpool(&m, "pool1", x, 2, 1, &err);
    if (x >= 0) x = nz_model_add_flatten(&m, "flatten", x, &err);
    if (x >= 0) x = nz_model_add_dropout(&m, "drop1", x, 0.5f, &err);
    if (x >= 0) x = nz_model_add_dense(&m, "fc1", x, 3, &err);
    nz_meta_set(&meta, "test_error", "0.0123");
    nz_meta_set(&meta, "epochs", "2");
    bad += x < 0 || save(&m, &meta, dir, "all.nnz");

    /* residual: conv -> bn -> relu, option-A shortcut, add, avgpool, gap, dense */
    if (nz_model_init(&m, "res", (nz_shape){1, 4, 4}, 2, &err)) return 1;
    x = nz_model_add_conv2d(&m, "conv1", 0, 2, 3, 2, 1, &err);
    if (x >= 0) x = nz_model_add_batchnorm(&m, "bn1", x, &err);
    if (x >= 0) x = nz_model_add_relu(&m, "relu1", x, &err);
    int sc = nz_model_add_shortcut(&m, "short", 0, 2, 2, &err);
    if (x >= 0 && sc >= 0) x = nz_model_add_add(&m, "add", x, sc, &err);
    if (x >= 0) x = nz_model_add_avgpool(&m, "pool", x, 1, 1, &err);
    if (x >= 0) x = nz_model_add_gap(&m, "gap", x, &err);
    if (x >= 0) x = nz_model_add_flatten(&m, "flatten", x, &err);
    if (x >= 0) x = nz_model_add_dense(&m, "fc", x, 2, &err);
    bad += x < 0 || save(&m, NULL, dir, "res.nnz");

    /* kernel-level sparsity (encoding KERNELS): conv1 with f32 values, 3 x 2 = 6 kernels (2
     * bitmap padding bits), 2 of them zero, one as -0.0; conv2 with f16 values, 4 x 3 kernels,
     * 5 zero */
    if (nz_model_init(&m, "kernels", (nz_shape){2, 4, 4}, 2, &err)) return 1;
    x = nz_model_add_conv2d(&m, "conv1", 0, 3, 3, 1, 1, &err);
    int c2 = x >= 0 ? nz_model_add_conv2d(&m, "conv2", x, 4, 3, 1, 1, &err) : -1;
    x = c2 >= 0 ? nz_model_add_flatten(&m, "flatten", c2, &err) : -1;
    if (x >= 0) x = nz_model_add_dense(&m, "fc1", x, 2, &err);
    if (x < 0) return 1;
    {
        nz_rng rng;
        nz_rng_seed(&rng, 1);
        nz_model_init_params(&m, &rng);
        float *w1 = m.params + m.nodes[1].params[0].off, *w2 = m.params + m.nodes[c2].params[0].off;
        for (int q = 0; q < 9; q++) {
            w1[1 * 9 + q] = 0.0f;
            w1[4 * 9 + q] = -0.0f;
            for (int j = 0; j < 12; j += 3) w2[j * 9 + q] = 0.0f; /* kernels 0, 3, 6, 9 */
            w2[11 * 9 + q] = 0.0f;
        }
        m.nodes[c2].params[0].store = NZ_STORE_F16;
        char kpath[1024];
        snprintf(kpath, sizeof kpath, "%s/kernels.nnz", dir);
        if (nz_save(&m, NULL, kpath, &err)) {
            fprintf(stderr, "kernels seed: %s\n", err.msg);
            bad++;
        }
        nz_model_free(&m);
    }

    /* a checkpoint (STATE section) of the mlp */
    if (nz_model_init(&m, "mlp", (nz_shape){1, 2, 2}, 2, &err)) return 1;
    x = nz_model_add_flatten(&m, "flatten", 0, &err);
    if (x >= 0) x = nz_model_add_dense(&m, "fc1", x, 2, &err);
    if (x < 0) return 1;
    nz_train_state st;
    memset(&st, 0, sizeof st);
    nz_train_cfg_default(&st.cfg);
    st.cfg.epochs = 3;
    st.epoch = 1;
    st.steps = 1; /* ceil(n_order / batch) */
    st.last_test_err = st.best_test_err = -1.0f;
    nz_rng_seed(&st.shuffle_rng, 1);
    nz_rng_seed(&st.drop_rng, 2);
    nz_rng_seed(&st.aug_rng, 3);
    float vel[10] = {0.1f, -0.2f, 0.3f, 0, 0, 0.5f, 0, 0, 0, -0.1f};
    int32_t order[4] = {2, 0, 3, 1};
    st.n_params = m.n_params;
    st.velocity = vel;
    st.n_order = 4;
    st.order = order;
    char path[1024];
    snprintf(path, sizeof path, "%s/ckpt.nnz", dir);
    nz_rng rng;
    nz_rng_seed(&rng, 1);
    nz_model_init_params(&m, &rng);
    if (m.n_params != 10 || nz_save_checkpoint(&m, NULL, &st, path, &err)) {
        fprintf(stderr, "checkpoint seed: %s\n", err.msg);
        bad++;
    }
    nz_model_free(&m);
    return bad ? 1 : 0;
}
