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

float nz_distill_xent(const float *logits, const float *teacher, const uint8_t *labels, int B,
                      int K, float eps, const nz_distill *d, float *dlogits, int *n_correct) {
    float ce = nz_softmax_xent_smooth(logits, labels, B, K, eps, dlogits, n_correct);
    if (!d || d->alpha == 0.0f) return ce;
    const double a = d->alpha, T = d->temperature;
    double kl = 0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * K, *t = teacher + (size_t)b * K;
        double zm = z[0], tm = t[0];
        for (int k = 1; k < K; k++) {
            if (z[k] > zm) zm = z[k];
            if (t[k] > tm) tm = t[k];
        }
        double zs = 0, ts = 0;
        for (int k = 0; k < K; k++) {
            zs += exp((z[k] - zm) / T);
            ts += exp((t[k] - tm) / T);
        }
        const double zl = log(zs), tl = log(ts); /* log-sum-exp of the shifted, tempered logits */
        float *g = dlogits ? dlogits + (size_t)b * K : NULL;
        for (int k = 0; k < K; k++) {
            const double lq = (z[k] - zm) / T - zl, lp = (t[k] - tm) / T - tl; /* log q, log p */
            const double p = exp(lp);
            kl += p * (lp - lq);
            /* d/dz of T^2 KL(p || q) = T (q - p); the label term is scaled by 1 - alpha */
            if (g) g[k] = (float)((1.0 - a) * g[k] + a * T * (exp(lq) - p) / B);
        }
    }
    return (float)((1.0 - a) * ce + a * T * T * kl / B);
}
