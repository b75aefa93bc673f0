/* nz_infer (inference with conv -> batch norm -> relu fused into one conv) against the plain
 * eval-mode nz_forward: the same logits up to float rounding on ResNet-20 and VGG-16 with
 * non-trivial batch-norm statistics, and bit-identical logits where nothing fuses (LeNet-5). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnzip/model.h"
#include "testlib.h"

static void randomize_bn(nz_model *m, nz_rng *r) {
    for (int i = 0; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        if (n->op != NZ_OP_BATCHNORM) continue;
        for (int c = 0; c < n->out.c; c++) {
            m->params[n->params[0].off + c] = nz_rng_range(r, 0.5f, 1.5f);
            m->params[n->params[1].off + c] = nz_rng_range(r, -0.3f, 0.3f);
            m->params[n->params[2].off + c] = nz_rng_range(r, -0.3f, 0.3f);
            m->params[n->params[3].off + c] = nz_rng_range(r, 0.3f, 2.0f);
        }
    }
}

static void check_model(const char *arch, nz_shape in, int B, double tol) {
    nz_model m;
    nz_error err;
    if (nz_zoo_build(&m, arch, in, 10, &err) != NZ_OK) {
        CHECK(0, "%s: %s", arch, err.msg);
        return;
    }
    nz_rng r;
    nz_rng_seed(&r, 42);
    nz_model_init_params(&m, &r);
    randomize_bn(&m, &r);
    const size_t nx = nz_shape_size(in) * (size_t)B;
    float *x = malloc(sizeof(float) * nx), *z0 = malloc(sizeof(float) * 10 * (size_t)B);
    for (size_t i = 0; i < nx; i++) x[i] = nz_rng_range(&r, -1.0f, 1.0f);
    nz_ws *ws = nz_ws_new(&m, B, &err);
    CHECK(ws != NULL, "%s: workspace: %s", arch, err.msg);
    if (ws && x && z0) {
        memcpy(z0, nz_forward(&m, ws, x, B, 0, NULL), sizeof(float) * 10 * (size_t)B);
        /* a fresh workspace: a node nz_infer skipped by mistake cannot find the forward's
         * output still in its buffer */
        nz_ws_free(ws);
        ws = nz_ws_new(&m, B, &err);
        const float *z1 = ws ? nz_infer(&m, ws, x, B) : z0;
        double e = tl_max_rel_err(z1, z0, 10 * (size_t)B, 1e-3);
        CHECK(e <= tol, "%s: nz_infer differs from nz_forward by %.3g (> %.0e)", arch, e, tol);
        if (tol == 0)
            CHECK(memcmp(z1, z0, sizeof(float) * 10 * (size_t)B) == 0,
                  "%s: nothing fuses, yet the logits differ", arch);
        printf("  %s %dx%dx%d: max rel diff %.2e\n", arch, in.c, in.h, in.w, e);
    }
    nz_ws_free(ws);
    free(x);
    free(z0);
    nz_model_free(&m);
}

int main(void) {
    nz_set_threads(2);
    /* folding changes the rounding of each of ~20 conv layers: ~1e-5 relative per logit */
    check_model("resnet20", (nz_shape){3, 32, 32}, 3, 3e-4);
    check_model("resnet20", (nz_shape){1, 28, 28}, 2, 3e-4);
    check_model("vgg16", (nz_shape){1, 28, 28}, 2, 3e-4);
    check_model("lenet5", (nz_shape){1, 28, 28}, 4, 0);
    return tl_finish("test_infer");
}
