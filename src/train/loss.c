/* Training losses beyond the plain cross-entropy of the engine (nz_softmax_xent). */
#include <math.h>

#include "nnzip/train.h"

float nz_softmax_xent_smooth(const float *logits, const uint8_t *labels, int B, int K, float eps,
                             float *dlogits, int *n_correct) {
    /* the plain loss keeps its own code path, so runs without smoothing keep their bits */
    if (eps == 0.0f) return nz_softmax_xent(logits, labels, B, K, dlogits, n_correct);
    const double e = eps, on = 1.0 - e, off = e / K;
    double loss = 0;
    int correct = 0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * K;
        float mx = z[0];
        int arg = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > mx) {
                mx = z[k];
                arg = k;
            }
        double sum = 0, zsum = 0;
        for (int k = 0; k < K; k++) {
            sum += exp((double)(z[k] - mx));
            zsum += z[k];
        }
        const double lse = mx + log(sum);
        const int y = labels[b];
        /* -log p[k] = lse - z[k]; its mean over k is lse - mean(z) */
        loss += on * (lse - z[y]) + e * (lse - zsum / K);
        if (arg == y) correct++;
        if (dlogits) {
            float *g = dlogits + (size_t)b * K;
            for (int k = 0; k < K; k++)
                g[k] = (float)((exp((double)z[k] - lse) - off - (k == y ? on : 0.0)) / B);
        }
    }
    if (n_correct) *n_correct = correct;
    return (float)(loss / B);
}
