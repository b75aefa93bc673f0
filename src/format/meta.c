/* nz_meta: a small fixed-capacity key/value list stored in a .nnz META section. */
#include "nnzip/format.h"

#include <stdio.h>
#include <string.h>

/* Sets key to val, replacing an existing entry. Keys and values longer than the fixed slots
 * (31 and 127 bytes) are truncated; when all NZF_MAX_META slots are taken a new key is dropped.
 * Both are silent because meta holds informational facts, never data a model needs to run. */
void nz_meta_set(nz_meta *meta, const char *key, const char *val) {
    if (!meta || !key) return;
    if (!val) val = "";
    char k[sizeof meta->key[0]];
    snprintf(k, sizeof k, "%s", key);
    if (meta->n < 0 || meta->n > (int)NZF_MAX_META) meta->n = 0;
    for (int i = 0; i < meta->n; i++) {
        if (strcmp(meta->key[i], k) == 0) {
            snprintf(meta->val[i], sizeof meta->val[i], "%s", val);
            return;
        }
    }
    if (meta->n == (int)NZF_MAX_META) return;
    memcpy(meta->key[meta->n], k, sizeof k);
    snprintf(meta->val[meta->n], sizeof meta->val[0], "%s", val);
    meta->n++;
}

const char *nz_meta_get(const nz_meta *meta, const char *key) {
    if (!meta || !key || meta->n < 0 || meta->n > (int)NZF_MAX_META) return NULL;
    for (int i = 0; i < meta->n; i++)
        if (strncmp(meta->key[i], key, sizeof meta->key[i]) == 0 &&
            strlen(key) < sizeof meta->key[i])
            return meta->val[i];
    return NULL;
}
