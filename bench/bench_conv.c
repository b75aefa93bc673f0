/* Convolution kernel efficiency: every distinct conv layer of ResNet-20 and VGG-16 (3x32x32
 * inputs) timed through conv2d_forward / conv2d_backward with the scratch sizes src/core/graph.c
 * gives them, as achieved GFLOP/s and as a fraction of what cblas_sgemm reaches on a large
 * square product with the same thread count in the same run.
 * FLOPs: forward 2 * MACs; backward 2 * MACs for dW, plus 2 * MACs for din except on the first
 * layer (the graph computes no gradient for the data). Bias work is not counted. The last column
 * names the kernel conv2d_forward / conv2d_backward pick for the layer (direct 3x3 or im2col +
 * GEMM, see conv_algo_pick in src/core/layers.c).
 * GFLOP/s count the direct convolution's multiply-adds whatever the kernel (Winograd does fewer).
 * Usage: bench_conv [BATCH] [THREADS] [ALGO]   (default 128 2 auto; ALGO im2col, direct or
 * winograd forces that kernel where the shape allows it). Prints a table; appends one JSON line
 * per layer group, per model and for the sgemm reference to bench/out/conv.jsonl (when run from
 * the repository root, as the Makefile and scripts do). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/layers.h"
#include "nnzip/model.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define MIN_REPS 3
#define MAX_REPS 15
#define MIN_TIME 0.4 /* seconds of timed calls per measurement, at least MIN_REPS calls */

typedef struct {
    double best, median;
    int reps;
} timing;

static timing summarize(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    timing r = {t[0], n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), n};
    return r;
}

static void fill(float *p, size_t n, unsigned *seed) {
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = (float)(*seed >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "bench_conv: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* cblas_sgemm GFLOP/s on n x n x n, best of reps after one warm-up call */
static double sgemm_gflops(int n, int reps) {
    const size_t nn = (size_t)n * n;
    float *a = xmalloc(sizeof(float) * nn), *b = xmalloc(sizeof(float) * nn),
          *c = xmalloc(sizeof(float) * nn);
    unsigned seed = 12345;
    fill(a, nn, &seed);
    fill(b, nn, &seed);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        double t = now_s() - t0;
        if (r > 0 && t < best) best = t;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * n * (double)n * n / best * 1e-9;
}

typedef struct {
    char name[48];      /* first layer of the group */
    int count;
    int C, H, W, OC, K, stride, pad, OH, OW;
    int din;            /* input gradient computed (not the first layer) */
} conv_group;

/* Distinct conv shapes of model, in first-use order. */
static int collect(const nz_model *m, conv_group *g, int cap) {
    int n = 0;
    for (int i = 1; i < m->n_nodes; i++) {
        const nz_node *nd = &m->nodes[i];
        if (nd->op != NZ_OP_CONV2D) continue;
        const nz_shape s = m->nodes[nd->inputs[0]].out;
        conv_group k = {.count = 1, .C = s.c, .H = s.h, .W = s.w, .OC = nd->units, .K = nd->kh,
                        .stride = nd->stride, .pad = nd->pad, .OH = nd->out.h, .OW = nd->out.w,
                        .din = nd->inputs[0] != 0};
        snprintf(k.name, sizeof k.name, "%s", nd->name);
        int j;
        for (j = 0; j < n; j++)
            if (g[j].C == k.C && g[j].H == k.H && g[j].W == k.W && g[j].OC == k.OC &&
                g[j].K == k.K && g[j].stride == k.stride && g[j].pad == k.pad &&
                g[j].din == k.din)
                break;
        if (j < n) {
            g[j].count++;
        } else if (n < cap) {
            g[n++] = k;
        }
    }
    return n;
}

typedef struct {
    timing fwd, bwd;
    const char *fwd_kernel, *bwd_kernel; /* what conv2d_forward/backward picked */
} conv_result;

static const char *kernel_name(const conv_dims *d, int backward, int B) {
    const int k = conv_kernel(d, backward, B);
    return k == CONV_ALGO_WINOGRAD ? "winograd" : k == CONV_ALGO_DIRECT ? "direct" : "im2col";
}

static conv_result time_conv(const conv_group *g, int B, int threads, int algo) {
    conv_dims d = conv_dims_make(g->C, g->H, g->W, g->OC, g->K, g->stride, g->pad);
    d.algo = algo;
    if (d.threads > threads) d.threads = threads; /* as node_conv_dims: scratch sized for ws->threads */
    const size_t in_n = (size_t)B * g->C * g->H * g->W, out_n = (size_t)B * g->OC * d.OH * d.OW;
    const size_t wn = (size_t)g->OC * g->C * g->K * g->K;
    float *in = xmalloc(sizeof(float) * in_n), *din = xmalloc(sizeof(float) * in_n);
    float *out = xmalloc(sizeof(float) * out_n), *dout = xmalloc(sizeof(float) * out_n);
    float *W = xmalloc(sizeof(float) * wn), *b = xmalloc(sizeof(float) * (size_t)g->OC);
    float *dW = xmalloc(sizeof(float) * wn), *db = xmalloc(sizeof(float) * (size_t)g->OC);
    /* graph.c: scratch = conv_scratch_per_thread * ws->threads, dW_partial = (|W| + OC) * threads */
    float *scratch = xmalloc(sizeof(float) * conv_scratch_per_thread(&d) * (size_t)threads);
    float *partial = xmalloc(sizeof(float) * (wn + (size_t)g->OC) * (size_t)threads);
    unsigned seed = 777;
    fill(in, in_n, &seed);
    fill(dout, out_n, &seed);
    fill(W, wn, &seed);
    fill(b, (size_t)g->OC, &seed);
    memset(din, 0, sizeof(float) * in_n);
    memset(dW, 0, sizeof(float) * wn);
    memset(db, 0, sizeof(float) * (size_t)g->OC);
    double t[MAX_REPS];
    conv_result r;
    r.fwd_kernel = kernel_name(&d, 0, B);
    r.bwd_kernel = kernel_name(&d, 1, B);
    for (int pass = 0; pass < 2; pass++) {
        double total = 0;
        int n = 0;
        for (int rep = -1; rep < MAX_REPS && (n < MIN_REPS || total < MIN_TIME); rep++) {
            double t0 = now_s();
            if (pass == 0)
                conv2d_forward(out, in, W, b, B, &d, scratch);
            else /* gradients accumulate across calls, as they do over a network's consumers */
                conv2d_backward(g->din ? din : NULL, dW, db, dout, in, W, B, &d, scratch, partial);
            double dt = now_s() - t0;
            if (rep < 0) continue; /* warm-up call */
            t[n++] = dt;
            total += dt;
        }
        if (pass == 0) r.fwd = summarize(t, n);
        else r.bwd = summarize(t, n);
    }
    free(in);
    free(din);
    free(out);
    free(dout);
    free(W);
    free(b);
    free(dW);
    free(db);
    free(scratch);
    free(partial);
    return r;
}

static void cpu_model(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *p = strchr(line, ':');
        if (!p) break;
        for (p++; *p == ' ' || *p == '\t'; p++) {}
        snprintf(buf, cap, "%s", p);
        buf[strcspn(buf, "\n")] = 0;
        for (char *q = buf; *q; q++)
            if (*q == '"' || *q == '\\') *q = ' ';
        break;
    }
    fclose(f);
}

int main(int argc, char **argv) {
    int B = argc > 1 ? atoi(argv[1]) : 128, threads = argc > 2 ? atoi(argv[2]) : 2;
    const char *an = argc > 3 ? argv[3] : "auto";
    int algo = -1;
    if (!strcmp(an, "auto")) algo = CONV_ALGO_AUTO;
    else if (!strcmp(an, "im2col")) algo = CONV_ALGO_IM2COL;
    else if (!strcmp(an, "direct")) algo = CONV_ALGO_DIRECT;
    else if (!strcmp(an, "winograd")) algo = CONV_ALGO_WINOGRAD;
    if (argc > 4 || B <= 0 || threads <= 0 || algo < 0) {
        fprintf(stderr, "usage: bench_conv [BATCH] [THREADS] [auto|im2col|direct|winograd]   "
                        "(default 128 2 auto)\n");
        return 2;
    }
    nz_set_threads(threads);
    threads = nz_get_threads(); /* what nz_ws_new would size scratch for */
    const char *ct = getenv("OPENBLAS_CORETYPE");
    ct = ct && *ct ? ct : "auto";
    char cpu[256], date[32];
    cpu_model(cpu, sizeof cpu);
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));

    FILE *js = NULL;
    struct stat st;
    if (stat("bench", &st) == 0 && S_ISDIR(st.st_mode)) {
        mkdir("bench/out", 0777);
        js = fopen("bench/out/conv.jsonl", "a");
    }
    if (!js) fprintf(stderr, "bench_conv: no bench/out/conv.jsonl here; table only\n");

    printf("# bench_conv %s  %s, %ld cores, batch %d, threads %d, OPENBLAS_CORETYPE=%s "
           "(OpenBLAS core %s)\n",
           date, cpu, sysconf(_SC_NPROCESSORS_ONLN), B, threads, ct, openblas_get_corename());
    const int gn = 2048;
    double peak = sgemm_gflops(gn, 5);
    printf("# cblas_sgemm %dx%dx%d, %d threads: %.1f GFLOP/s (best of 5); ratio = conv GFLOP/s / "
           "this\n",
           gn, gn, gn, threads, peak);
    if (js)
        fprintf(js, "{\"bench\": \"conv\", \"kind\": \"sgemm\", \"date\": \"%s\", \"cpu\": \"%s\", "
                    "\"threads\": %d, \"openblas_coretype\": \"%s\", \"openblas_core\": \"%s\", "
                    "\"n\": %d, \"gflops\": %.2f}\n",
                date, cpu, threads, ct, openblas_get_corename(), gn, peak);

    static const char *const models[] = {"resnet20", "vgg16"};
    for (size_t mi = 0; mi < sizeof models / sizeof *models; mi++) {
        nz_model m;
        nz_error e = {0};
        if (nz_zoo_build(&m, models[mi], (nz_shape){3, 32, 32}, 10, &e)) {
            fprintf(stderr, "bench_conv: %s\n", e.msg);
            return 1;
        }
        conv_group g[64];
        int ng = collect(&m, g, 64);
        int nconv = 0;
        for (int i = 0; i < ng; i++) nconv += g[i].count;
        printf("\n%s, 3x32x32, batch %d: %d conv layers in %d shapes (best of >= %d calls after "
               "a warm-up)\n",
               models[mi], B, nconv, ng, MIN_REPS);
        printf("%-14s %3s %-22s %3s %9s %9s %8s %6s %9s %8s %6s %6s %s\n", "layer", "n",
               "CxHxW -> OCxOHxOW", "k/s", "GFLOP/img", "fwd_ms", "fwd_GF/s", "ratio", "bwd_ms",
               "bwd_GF/s", "ratio", "time%", "kernels fwd/bwd");
        conv_result res[64];
        double fl_f = 0, fl_b = 0, t_f = 0, t_b = 0;
        for (int i = 0; i < ng; i++) {
            res[i] = time_conv(&g[i], B, threads, algo);
            const double macs = (double)g[i].OC * g[i].C * g[i].K * g[i].K * g[i].OH * g[i].OW;
            fl_f += g[i].count * 2.0 * macs * B;
            fl_b += g[i].count * 2.0 * macs * B * (g[i].din ? 2 : 1);
            t_f += g[i].count * res[i].fwd.best;
            t_b += g[i].count * res[i].bwd.best;
        }
        for (int i = 0; i < ng; i++) {
            const conv_group *c = &g[i];
            const double macs = (double)c->OC * c->C * c->K * c->K * c->OH * c->OW;
            const double ff = 2.0 * macs * B, fb = ff * (c->din ? 2 : 1);
            const double gf = ff / res[i].fwd.best * 1e-9, gb = fb / res[i].bwd.best * 1e-9;
            const double share = 100.0 * c->count * (res[i].fwd.best + res[i].bwd.best) / (t_f + t_b);
            char shape[40];
            snprintf(shape, sizeof shape, "%dx%dx%d -> %dx%dx%d", c->C, c->H, c->W, c->OC, c->OH,
                     c->OW);
            printf("%-14s %3d %-22s %d/%d %9.4f %9.2f %8.1f %6.2f %9.2f %8.1f %6.2f %5.1f%% "
                   "%s/%s%s\n",
                   c->name, c->count, shape, c->K, c->stride, 2.0 * macs * 1e-9,
                   res[i].fwd.best * 1e3, gf, gf / peak, res[i].bwd.best * 1e3, gb, gb / peak,
                   share, res[i].fwd_kernel, res[i].bwd_kernel, c->din ? "" : "  (no din)");
            if (js)
                fprintf(js,
                        "{\"bench\": \"conv\", \"kind\": \"layer\", \"date\": \"%s\", \"cpu\": "
                        "\"%s\", \"threads\": %d, \"openblas_coretype\": \"%s\", \"model\": "
                        "\"%s\", \"layer\": \"%s\", \"count\": %d, \"batch\": %d, \"C\": %d, "
                        "\"H\": %d, \"W\": %d, \"OC\": %d, \"OH\": %d, \"OW\": %d, \"k\": %d, "
                        "\"stride\": %d, \"pad\": %d, \"din\": %d, \"fwd_gflop\": %.4f, "
                        "\"bwd_gflop\": %.4f, \"fwd_ms_best\": %.3f, \"fwd_ms_median\": %.3f, "
                        "\"bwd_ms_best\": %.3f, \"bwd_ms_median\": %.3f, \"fwd_gflops\": %.2f, "
                        "\"bwd_gflops\": %.2f, \"sgemm_gflops\": %.2f, \"fwd_ratio\": %.3f, "
                        "\"bwd_ratio\": %.3f, \"fwd_kernel\": \"%s\", \"bwd_kernel\": \"%s\"}\n",
                        date, cpu, threads, ct, models[mi], c->name, c->count, B, c->C, c->H,
                        c->W, c->OC, c->OH, c->OW, c->K, c->stride, c->pad, c->din, ff * 1e-9,
                        fb * 1e-9, res[i].fwd.best * 1e3, res[i].fwd.median * 1e3,
                        res[i].bwd.best * 1e3, res[i].bwd.median * 1e3, gf, gb, peak, gf / peak,
                        gb / peak, res[i].fwd_kernel, res[i].bwd_kernel);
        }
        const double gf = fl_f / t_f * 1e-9, gb = fl_b / t_b * 1e-9,
                     ga = (fl_f + fl_b) / (t_f + t_b) * 1e-9;
        printf("%-14s %3d %-22s %3s %9.4f %9.2f %8.1f %6.2f %9.2f %8.1f %6.2f\n", "all convs",
               nconv, "", "", fl_f / B * 1e-9, t_f * 1e3, gf, gf / peak, t_b * 1e3, gb, gb / peak);
        printf("%s whole-network conv: fwd %.1f GFLOP/s (%.2f of sgemm), bwd %.1f GFLOP/s (%.2f), "
               "fwd+bwd %.1f GFLOP/s (%.2f); conv time per training step %.0f ms = %.0f img/s "
               "upper bound\n",
               models[mi], gf, gf / peak, gb, gb / peak, ga, ga / peak, (t_f + t_b) * 1e3,
               B / (t_f + t_b));
        if (js)
            fprintf(js,
                    "{\"bench\": \"conv\", \"kind\": \"model\", \"date\": \"%s\", \"cpu\": \"%s\", "
                    "\"threads\": %d, \"openblas_coretype\": \"%s\", \"model\": \"%s\", "
                    "\"batch\": %d, \"convs\": %d, \"fwd_gflop\": %.3f, \"bwd_gflop\": %.3f, "
                    "\"fwd_ms\": %.2f, \"bwd_ms\": %.2f, \"fwd_gflops\": %.2f, \"bwd_gflops\": "
                    "%.2f, \"total_gflops\": %.2f, \"sgemm_gflops\": %.2f, \"fwd_ratio\": %.3f, "
                    "\"bwd_ratio\": %.3f, \"total_ratio\": %.3f}\n",
                    date, cpu, threads, ct, models[mi], B, nconv, fl_f * 1e-9, fl_b * 1e-9,
                    t_f * 1e3, t_b * 1e3, gf, gb, ga, peak, gf / peak, gb / peak, ga / peak);
        nz_model_free(&m);
    }
    if (js) fclose(js);
    return 0;
}
