/* .nnz container: round trip, hand-patched corrupt files, and atomic saves.
 *
 * Corrupt files are built by patching a real file and recomputing its CRCs (or reassembling its
 * sections) with a tiny independent writer below, so each case reaches the check it targets
 * instead of stopping at a checksum. */
#include "nnzip/format.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "filebytes.h"
#include "testlib.h"

static char g_dir[512];
static char g_path[600]; /* the reference model file */

/* ---------------------------------------------------------------- little helpers */


static int write_all(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(p, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static int is_zero(const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

/* ---------------------------------------------------------------- container surgery */

static uint32_t n_sections(const uint8_t *f) { return rd32(f + 12); }
static uint8_t *entry(uint8_t *f, uint32_t i) { return f + NZF_HEADER_SIZE + NZF_ENTRY_SIZE * i; }
static uint64_t sec_off(uint8_t *f, uint32_t i) { return rd64(entry(f, i) + 8); }
static uint64_t sec_len(uint8_t *f, uint32_t i) { return rd64(entry(f, i) + 16); }

static uint32_t crc(const uint8_t *p, size_t n) { return (uint32_t)crc32(0L, p, (uInt)n); }

/* Recomputes every in-bounds section CRC and then the table CRC. */
static void fix_crcs(uint8_t *f, size_t size) {
    uint32_t s = n_sections(f);
    for (uint32_t i = 0; i < s; i++) {
        uint64_t off = sec_off(f, i), len = sec_len(f, i);
        if (off <= size && len <= size - off) wr32(entry(f, i) + 24, crc(f + off, (size_t)len));
    }
    wr32(f + 20, crc(f + NZF_HEADER_SIZE, (size_t)s * NZF_ENTRY_SIZE));
}

typedef struct {
    uint32_t kind;
    uint8_t *data;
    size_t len;
} tsec;

#define MAX_TSEC 64

/* Splits a valid file into owned copies of its sections. */
static int split(const uint8_t *f, tsec *out) {
    uint32_t s = n_sections(f);
    for (uint32_t i = 0; i < s && i < MAX_TSEC; i++) {
        const uint8_t *e = f + NZF_HEADER_SIZE + NZF_ENTRY_SIZE * i;
        out[i].kind = rd32(e);
        out[i].len = (size_t)rd64(e + 16);
        const uint8_t *src = f + rd64(e + 8);
        if (rd32(e + 4) & NZF_SECFLAG_DEFLATE) { /* keep the raw bytes: tests edit them */
            uLongf raw = rd32(src);
            out[i].data = calloc(1, raw + 64);
            uncompress(out[i].data, &raw, src + 4, (uLong)(out[i].len - 4));
            out[i].len = raw;
        } else {
            out[i].data = calloc(1, out[i].len + 64); /* room to grow in tests */
            memcpy(out[i].data, src, out[i].len);
        }
    }
    return (int)s;
}

static void free_split(tsec *s, int n) {
    for (int i = 0; i < n; i++) free(s[i].data);
}

/* An independent writer of the container: sections back to back after the table. */
static uint8_t *assemble(const tsec *s, int n, size_t *size) {
    size_t head = NZF_HEADER_SIZE + (size_t)n * NZF_ENTRY_SIZE, total = head;
    for (int i = 0; i < n; i++) total += s[i].len;
    uint8_t *f = calloc(1, total);
    static const uint8_t magic[8] = {0x89, 'N', 'N', 'Z', 0x0D, 0x0A, 0x1A, 0x0A};
    memcpy(f, magic, 8);
    wr32(f + 8, 1);
    wr32(f + 12, (uint32_t)n);
    size_t off = head;
    for (int i = 0; i < n; i++) {
        uint8_t *e = f + NZF_HEADER_SIZE + NZF_ENTRY_SIZE * (size_t)i;
        wr32(e, s[i].kind);
        wr64(e + 8, off);
        wr64(e + 16, s[i].len);
        wr32(e + 24, crc(s[i].data, s[i].len));
        memcpy(f + off, s[i].data, s[i].len);
        off += s[i].len;
    }
    wr32(f + 20, crc(f + NZF_HEADER_SIZE, (size_t)n * NZF_ENTRY_SIZE));
    *size = total;
    return f;
}

/* Byte position of node `node`'s record inside a GRAPH payload. */
static size_t graph_node_pos(const uint8_t *g, int node) {
    size_t pos = 60;
    for (int i = 0; i < node; i++) pos += 76 + 20 * (size_t)rd32(g + pos + 72);
    return pos;
}

/* ---------------------------------------------------------------- the model */

/* conv -> relu -> pool -> flatten -> dense -> relu -> dropout -> dense: every op kind */
static nz_status build_model(nz_model *m, nz_error *err) {
    nz_status st = nz_model_init(m, "tiny", (nz_shape){1, 8, 8}, 3, err);
    if (st) return st;
    int x = nz_model_add_conv2d(m, "conv1", 0, 3, 3, 1, 1, err);
    if (x >= 0) x = nz_model_add_relu(m, "relu1", x, err);
    if (x >= 0) x = nz_model_add_maxpool(m, "pool1", x, 2, 2, err);
    if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, err);
    if (x >= 0) x = nz_model_add_dense(m, "fc1", x, 8, err);
    if (x >= 0) x = nz_model_add_relu(m, "relu2", x, err);
    if (x >= 0) x = nz_model_add_dropout(m, "drop1", x, 0.25f, err);
    if (x >= 0) x = nz_model_add_dense(m, "fc2", x, 3, err);
    if (x < 0) {
        nz_model_free(m);
        return err->code;
    }
    for (size_t i = 0; i < m->n_params; i++) m->params[i] = (float)i * 0.001f - 0.2f;
    /* values that only survive a bit-exact round trip */
    uint32_t nan_bits = 0x7fc01234u;
    memcpy(&m->params[1], &nan_bits, 4);
    m->params[2] = -0.0f;
    m->params[3] = INFINITY;
    m->params[4] = 1e-42f; /* subnormal */
    m->pre.scale = 1.0f / 255.0f;
    m->pre.mean[0] = 0.1307f;
    m->pre.std[0] = 0.3081f;
    return NZ_OK;
}

static int models_equal(const nz_model *a, const nz_model *b, char *why, size_t wn) {
#define DIFF(...) return snprintf(why, wn, __VA_ARGS__), 0
    if (strcmp(a->arch, b->arch)) DIFF("arch %s vs %s", a->arch, b->arch);
    if (memcmp(&a->in, &b->in, sizeof a->in)) DIFF("input shape");
    if (a->n_classes != b->n_classes) DIFF("n_classes");
    if (a->pre.n_ch != b->pre.n_ch || memcmp(&a->pre.scale, &b->pre.scale, 4) ||
        memcmp(a->pre.mean, b->pre.mean, sizeof a->pre.mean) ||
        memcmp(a->pre.std, b->pre.std, sizeof a->pre.std))
        DIFF("preprocessing");
    if (a->n_nodes != b->n_nodes) DIFF("n_nodes %d vs %d", a->n_nodes, b->n_nodes);
    for (int i = 0; i < a->n_nodes; i++) {
        const nz_node *x = &a->nodes[i], *y = &b->nodes[i];
        if (x->op != y->op || strcmp(x->name, y->name) || x->n_inputs != y->n_inputs ||
            x->units != y->units || x->kh != y->kh || x->kw != y->kw || x->stride != y->stride ||
            x->pad != y->pad || memcmp(&x->p, &y->p, 4) || x->n_params != y->n_params ||
            memcmp(&x->out, &y->out, sizeof x->out))
            DIFF("node %d fields", i);
        for (int k = 0; k < x->n_inputs; k++)
            if (x->inputs[k] != y->inputs[k]) DIFF("node %d input %d", i, k);
        for (int k = 0; k < x->n_params; k++) {
            const nz_param *p = &x->params[k], *q = &y->params[k];
            if (p->off != q->off || p->n != q->n || p->ndim != q->ndim ||
                memcmp(p->dims, q->dims, sizeof(int) * (size_t)p->ndim))
                DIFF("node %d param %d", i, k);
        }
    }
    if (a->n_params != b->n_params) DIFF("n_params");
    if (memcmp(a->params, b->params, sizeof(float) * a->n_params)) DIFF("param values");
    return 1;
#undef DIFF
}

/* ---------------------------------------------------------------- expectations */

/* Loads buf under name g_path and checks the status, that the message names the file (and
 * contains `needle` if given), and that the outputs were left zeroed. */
static int load_fails(const uint8_t *buf, size_t n, nz_status want, const char *needle,
                      char *msg, size_t msgn) {
    nz_model m;
    nz_meta *meta = malloc(sizeof *meta);
    memset(&m, 0x5a, sizeof m);
    memset(meta, 0x5a, sizeof *meta);
    nz_error err = {0};
    nz_status st = nz_load_buffer(buf, n, g_path, &m, meta, &err);
    int ok = st != NZ_OK && (want == NZ_OK || st == want) && err.code == st &&
             strncmp(err.msg, g_path, strlen(g_path)) == 0 && (!needle || strstr(err.msg, needle)) &&
             is_zero(&m, sizeof m) && meta->n == 0;
    snprintf(msg, msgn, "status %s (want %s): %s", nz_status_name(st),
             want ? nz_status_name(want) : "any error", err.msg);
    if (st == NZ_OK) nz_model_free(&m);
    free(meta);
    return ok;
}

#define EXPECT_FAIL(buf, n, want, needle)                                                      \
    do {                                                                                       \
        char msg_[700];                                                                        \
        int ok_ = load_fails(buf, n, want, needle, msg_, sizeof msg_);                         \
        CHECK(ok_, "%s", msg_);                                                                \
    } while (0)

/* ---------------------------------------------------------------- tests */

static void test_meta_api(void) {
    nz_meta *mt = calloc(1, sizeof *mt);
    nz_meta_set(mt, "a", "1");
    nz_meta_set(mt, "b", "2");
    nz_meta_set(mt, "a", "3");
    CHECK(mt->n == 2, "n=%d", mt->n);
    CHECK(nz_meta_get(mt, "a") && strcmp(nz_meta_get(mt, "a"), "3") == 0, "replace");
    CHECK(nz_meta_get(mt, "c") == NULL, "missing key");
    char longk[100];
    memset(longk, 'k', sizeof longk - 1);
    longk[99] = 0;
    nz_meta_set(mt, longk, "v");
    CHECK(strlen(mt->key[2]) == 31, "long key truncated to 31, got %zu", strlen(mt->key[2]));
    CHECK(nz_meta_get(mt, longk) == NULL, "an over-long key is not found by its long name");
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        nz_meta_set(mt, k, "x");
    }
    CHECK(mt->n == (int)NZF_MAX_META, "capacity %d", mt->n);
    free(mt);
}

static void test_round_trip(void) {
    nz_error err = {0};
    nz_model a, b;
    CHECK(build_model(&a, &err) == NZ_OK, "build: %s", err.msg);
    nz_meta *meta = calloc(1, sizeof *meta), *meta2 = calloc(1, sizeof *meta2);
    nz_meta_set(meta, "test_error", "0.0123");
    nz_meta_set(meta, "epochs", "3");
    nz_meta_set(meta, "note", "caf\xc3\xa9 with spaces");
    nz_meta_set(meta, "arch", "ignored"); /* the model's arch wins */

    CHECK(nz_save(&a, meta, g_path, &err) == NZ_OK, "save: %s", err.msg);
    struct stat sb;
    CHECK(stat(g_path, &sb) == 0 && (sb.st_mode & 0777) == 0644, "mode %o", sb.st_mode & 0777);
    CHECK(nz_load(g_path, &b, meta2, &err) == NZ_OK, "load: %s", err.msg);
    char why[128] = "";
    CHECK(models_equal(&a, &b, why, sizeof why), "round trip differs: %s", why);
    CHECK(nz_model_validate(&b, &err) == NZ_OK, "validate: %s", err.msg);
    const char *v;
    CHECK((v = nz_meta_get(meta2, "arch")) && strcmp(v, "tiny") == 0, "arch %s", v ? v : "-");
    CHECK((v = nz_meta_get(meta2, "created_by")) && strcmp(v, "nnzip") == 0, "created_by");
    CHECK((v = nz_meta_get(meta2, "test_error")) && strcmp(v, "0.0123") == 0, "test_error");
    CHECK((v = nz_meta_get(meta2, "epochs")) && strcmp(v, "3") == 0, "epochs");
    CHECK((v = nz_meta_get(meta2, "note")) && strcmp(v, "caf\xc3\xa9 with spaces") == 0, "note");
    CHECK(meta2->n == 5, "meta entries %d", meta2->n);

    /* saving what was loaded gives the same bytes: no duplicated arch/created_by */
    char p2[700];
    snprintf(p2, sizeof p2, "%s/again.nnz", g_dir);
    CHECK(nz_save(&b, meta2, p2, &err) == NZ_OK, "resave: %s", err.msg);
    size_t n1, n2;
    uint8_t *f1 = read_all(g_path, &n1), *f2 = read_all(p2, &n2);
    CHECK(f1 && f2 && n1 == n2 && memcmp(f1, f2, n1) == 0, "resave differs");
    free(f1);
    free(f2);
    unlink(p2);

    /* meta is optional both ways */
    nz_model c;
    CHECK(nz_load(g_path, &c, NULL, &err) == NZ_OK, "load without meta: %s", err.msg);
    nz_model_free(&c);
    CHECK(nz_save(&a, NULL, p2, &err) == NZ_OK, "save without meta: %s", err.msg);
    CHECK(nz_load(p2, &c, meta2, &err) == NZ_OK && meta2->n == 2 &&
              strcmp(c.arch, "tiny") == 0,
          "load of meta-less save: %s", err.msg);
    nz_model_free(&c);
    unlink(p2);

    /* stats */
    nz_file_stats st;
    size_t fsize;
    uint8_t *f = read_all(g_path, &fsize);
    CHECK(nz_file_stats_read(g_path, &st, &err) == NZ_OK, "stats: %s", err.msg);
    uint64_t sum = NZF_HEADER_SIZE + (uint64_t)st.n_sections * NZF_ENTRY_SIZE;
    for (int k = 0; k < NZF_SEC__END; k++) sum += st.bytes_by_kind[k];
    CHECK(st.version == 1 && st.n_sections == 2 + 6 && st.file_size == fsize && sum == fsize,
          "stats v%u s%u size %llu sum %llu", st.version, st.n_sections,
          (unsigned long long)st.file_size, (unsigned long long)sum);
    CHECK(st.bytes_by_kind[NZF_SEC_TENSOR] == 16 * 6 + 4 * a.n_params, "tensor bytes");
    f[40] ^= 1; /* the table: stats must refuse a corrupt file too */
    char bad[700];
    snprintf(bad, sizeof bad, "%s/bad.nnz", g_dir);
    write_all(bad, f, fsize);
    CHECK(nz_file_stats_read(bad, &st, &err) == NZ_ERR_CORRUPT && strstr(err.msg, bad),
          "stats of corrupt: %s", err.msg);
    unlink(bad);
    free(f);

    nz_model_free(&a);
    nz_model_free(&b);
    free(meta);
    free(meta2);
}

static void test_truncation(const uint8_t *f, size_t n) {
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        char msg[700];
        if (!load_fails(f, len, NZ_ERR_CORRUPT, NULL, msg, sizeof msg) && bad++ < 5)
            fprintf(stderr, "truncated to %zu: %s\n", len, msg);
    }
    CHECK(bad == 0, "%d truncations not reported as corrupt", bad);
    /* and through the file path */
    char p[700];
    snprintf(p, sizeof p, "%s/short.nnz", g_dir);
    write_all(p, f, n / 2);
    nz_model m;
    nz_error err = {0};
    CHECK(nz_load(p, &m, NULL, &err) == NZ_ERR_CORRUPT && strstr(err.msg, p), "%s", err.msg);
    unlink(p);
}

static void test_bit_flips(const uint8_t *f0, size_t n) {
    uint8_t *f = malloc(n);
    memcpy(f, f0, n);
    size_t head = NZF_HEADER_SIZE + (size_t)n_sections(f) * NZF_ENTRY_SIZE;
    int missed = 0, flips = 0;
    for (size_t byte = 0; byte < n; byte++) {
        /* every bit of header and table; one bit of every payload byte, all 8 of every 16th */
        int all = byte < head || byte % 16 == 0;
        for (int bit = 0; bit < 8; bit++) {
            if (!all && bit != (int)(byte % 8)) continue;
            f[byte] ^= (uint8_t)(1u << bit);
            /* past the header, only a CRC can notice */
            nz_status want = byte < 20 ? NZ_OK : NZ_ERR_CORRUPT;
            char msg[700];
            if (!load_fails(f, n, want, NULL, msg, sizeof msg) && missed++ < 5)
                fprintf(stderr, "flip byte %zu bit %d: %s\n", byte, bit, msg);
            f[byte] ^= (uint8_t)(1u << bit);
            flips++;
        }
    }
    CHECK(missed == 0, "%d of %d bit flips not detected", missed, flips);

    /* the CRC message names the section and the tensor */
    int s = 2; /* META, GRAPH, then conv1.W */
    f[sec_off(f, (uint32_t)s) + 20] ^= 0x10;
    EXPECT_FAIL(f, n, NZ_ERR_CORRUPT, "section 2 (tensor conv1.W) fails its CRC32 check: file is corrupt");
    free(f);
}

static void test_header_cases(const uint8_t *f0, size_t n) {
    uint8_t *f = malloc(n);

    memcpy(f, f0, n);
    f[1] = 'X';
    EXPECT_FAIL(f, n, NZ_ERR_FORMAT, "not an nnzip file (bad magic)");
    EXPECT_FAIL((const uint8_t *)"hello", 5, NZ_ERR_FORMAT, "not an nnzip file (bad magic)");
    EXPECT_FAIL((const uint8_t *)"PK\x03\x04 zip file, definitely not ours", 36, NZ_ERR_FORMAT,
                "bad magic");

    memcpy(f, f0, n);
    wr32(f + 8, 2);
    EXPECT_FAIL(f, n, NZ_ERR_UNSUPPORTED, "format version 2 is newer than this nnzip (1)");
    wr32(f + 8, 0);
    EXPECT_FAIL(f, n, NZ_ERR_FORMAT, "version");

    memcpy(f, f0, n);
    wr32(f + 16, 1);
    EXPECT_FAIL(f, n, NZ_ERR_UNSUPPORTED, "flags");

    memcpy(f, f0, n);
    wr32(f + 12, 0);
    EXPECT_FAIL(f, n, NZ_ERR_FORMAT, "section count");
    wr32(f + 12, NZF_MAX_SECTIONS + 1);
    EXPECT_FAIL(f, n, NZ_ERR_FORMAT, "section count");
    wr32(f + 12, NZF_MAX_SECTIONS);
    EXPECT_FAIL(f, n, NZ_ERR_CORRUPT, "truncated");

    /* unknown section kind, table CRC recomputed: refused, never skipped */
    memcpy(f, f0, n);
    uint32_t last = n_sections(f) - 1;
    wr32(entry(f, last), 9);
    fix_crcs(f, n);
    EXPECT_FAIL(f, n, NZ_ERR_UNSUPPORTED, "section 7 has unknown kind 9");

    memcpy(f, f0, n);
    wr32(entry(f, 1) + 4, 2);
    fix_crcs(f, n);
    EXPECT_FAIL(f, n, NZ_ERR_UNSUPPORTED, "section 1 (graph) has unknown flags");
    memcpy(f, f0, n);
    wr32(entry(f, 1) + 28, 1);
    fix_crcs(f, n);
    EXPECT_FAIL(f, n, NZ_ERR_FORMAT, "reserved");

    /* offset + length overflowing 64 bits, and plainly past the end */
    memcpy(f, f0, n);
    wr64(entry(f, last) + 8, UINT64_MAX - 3);
    fix_crcs(f, n);
    EXPECT_FAIL(f, n, NZ_ERR_CORRUPT, "section 7 (tensor)");
    memcpy(f, f0, n);
    wr64(entry(f, last) + 16, UINT64_MAX);
    fix_crcs(f, n);
    EXPECT_FAIL(f, n, NZ_ERR_CORRUPT, "past the end");
    memcpy(f, f0, n);
    wr64(entry(f, last) + 16, sec_len(f, last) + 1);
    fix_crcs(f, n);
    EXPECT_FAIL(f, n, NZ_ERR_CORRUPT, "past the end");

    /* overlapping sections; a section over the table */
    memcpy(f, f0, n);
    wr64(entry(f, 3) + 8, sec_off(f, 2) + 4);
    fix_crcs(f, n);
    EXPECT_FAIL(f, n, NZ_ERR_FORMAT, "overlaps");
    memcpy(f, f0, n);
    wr64(entry(f, 0) + 8, 8);
    wr64(entry(f, 0) + 16, 4);
    fix_crcs(f, n);
    EXPECT_FAIL(f, n, NZ_ERR_FORMAT, "overlaps");
    free(f);
}

static void test_section_cases(const uint8_t *f0, size_t n) {
    tsec s[MAX_TSEC];
    int ns = split(f0, s);
    CHECK(ns == 8 && s[0].kind == NZF_SEC_META && s[1].kind == NZF_SEC_GRAPH,
          "layout: %d sections", ns);
    size_t m;
    uint8_t *f;

    /* the independent assembler (raw sections) gives the model the writer's file gives */
    f = assemble(s, ns, &m);
    {
        nz_model a, b;
        nz_error err = {0};
        char why[256];
        CHECK(nz_load_buffer(f, m, g_path, &a, NULL, &err) == NZ_OK, "assembled: %s", err.msg);
        CHECK(nz_load_buffer(f0, n, g_path, &b, NULL, &err) == NZ_OK, "written: %s", err.msg);
        CHECK(models_equal(&a, &b, why, sizeof why), "assembler differs from writer: %s", why);
        nz_model_free(&a);
        nz_model_free(&b);
    }
    free(f);

    /* any section order is valid: GRAPH first, tensors reversed */
    tsec r[MAX_TSEC];
    r[0] = s[1];
    r[1] = s[0];
    for (int i = 2; i < ns; i++) r[i] = s[ns + 1 - i];
    f = assemble(r, ns, &m);
    nz_model x, y;
    nz_error err = {0};
    char why[128] = "";
    CHECK(nz_load_buffer(f, m, g_path, &x, NULL, &err) == NZ_OK, "reordered: %s", err.msg);
    CHECK(nz_load_buffer(f0, n, g_path, &y, NULL, &err) == NZ_OK, "%s", err.msg);
    CHECK(models_equal(&x, &y, why, sizeof why), "reordered differs: %s", why);
    nz_model_free(&x);
    nz_model_free(&y);
    free(f);

    /* tensor missing: drop fc2.b (the last section) */
    f = assemble(s, ns - 1, &m);
    EXPECT_FAIL(f, m, NZ_ERR_FORMAT, "no tensor section for fc2.b");
    free(f);

    /* tensor duplicated */
    tsec d[MAX_TSEC];
    memcpy(d, s, sizeof(tsec) * (size_t)ns);
    d[ns] = s[3];
    f = assemble(d, ns + 1, &m);
    EXPECT_FAIL(f, m, NZ_ERR_FORMAT, "second copy");
    free(f);

    /* META or GRAPH missing, twice */
    f = assemble(s + 1, ns - 1, &m);
    EXPECT_FAIL(f, m, NZ_ERR_FORMAT, "no meta section");
    free(f);
    memcpy(d, s, sizeof(tsec) * (size_t)ns);
    d[1] = s[0];
    f = assemble(d, ns, &m);
    EXPECT_FAIL(f, m, NZ_ERR_FORMAT, "both meta");
    free(f);

    /* a tensor payload one float short of its shape */
    memcpy(d, s, sizeof(tsec) * (size_t)ns);
    d[4].len -= 4;
    f = assemble(d, ns, &m);
    EXPECT_FAIL(f, m, NZ_ERR_SHAPE, "section 4 (tensor fc1.W): payload");
    free(f);
    d[4].len = 10; /* shorter than a tensor header */
    f = assemble(d, ns, &m);
    EXPECT_FAIL(f, m, NZ_ERR_FORMAT, "section 4 (tensor) is too short");
    free(f);
    d[4].len = s[4].len;
    d[7].len = 10; /* fc2.b: shorter than the tensor header */
    f = assemble(d, ns, &m);
    EXPECT_FAIL(f, m, NZ_ERR_FORMAT, "section 7 (tensor) is too short");
    free(f);

    /* unknown encoding; tensor for a node without parameters */
    uint8_t save[16];
    memcpy(save, s[4].data, 16);
    wr32(s[4].data + 8, NZF_ENC__END);
    f = assemble(s, ns, &m);
    char unknown[64];
    snprintf(unknown, sizeof unknown, "unknown encoding %u", (unsigned)NZF_ENC__END);
    EXPECT_FAIL(f, m, NZ_ERR_UNSUPPORTED, unknown);
    free(f);
    wr32(s[4].data + 8, NZF_ENC_F16); /* a valid encoding whose payload length disagrees */
    f = assemble(s, ns, &m);
    EXPECT_FAIL(f, m, NZ_ERR_SHAPE, "(tensor fc1.W): payload is");
    free(f);
    memcpy(s[4].data, save, 16);
    wr32(s[4].data, 2); /* node 2 is relu1 */
    f = assemble(s, ns, &m);
    EXPECT_FAIL(f, m, NZ_ERR_FORMAT, "no such parameter");
    free(f);
    wr32(s[4].data, 0xffffffffu);
    f = assemble(s, ns, &m);
    EXPECT_FAIL(f, m, NZ_ERR_FORMAT, "no such parameter");
    free(f);
    memcpy(s[4].data, save, 16);

    /* GRAPH surgery. Nodes: 0 input, 1 conv1, 2 relu1, 3 pool1, 4 flatten, 5 fc1, 6 relu2,
     * 7 drop1, 8 fc2. */
    uint8_t *g = s[1].data;
    uint8_t *g0 = malloc(s[1].len);
    memcpy(g0, g, s[1].len);
    const size_t glen = s[1].len;
#define RESET_GRAPH() (memcpy(g, g0, glen), s[1].len = glen)
#define GRAPH_CASE(want, needle)                                                               \
    do {                                                                                       \
        f = assemble(s, ns, &m);                                                               \
        EXPECT_FAIL(f, m, want, needle);                                                       \
        free(f);                                                                               \
        RESET_GRAPH();                                                                         \
    } while (0)
    size_t conv = graph_node_pos(g, 1), fc1 = graph_node_pos(g, 5), fc2 = graph_node_pos(g, 8);

    /* graph shape disagrees with a tensor's payload: fc2.W [3, 8] -> [4, 8] */
    wr32(g + fc2 + 76 + 4, 4);
    GRAPH_CASE(NZ_ERR_SHAPE, "(tensor fc2.W): payload");
    /* absurd dims: each below 2^31 but the product overflows 64 bits */
    for (int k = 0; k < 4; k++) wr32(g + conv + 76 + 4 + 4 * (size_t)k, 0x7fffffffu);
    GRAPH_CASE(NZ_ERR_FORMAT, "bad dims");
    wr32(g + fc1 + 76 + 4, 0xffffffffu); /* > INT_MAX */
    GRAPH_CASE(NZ_ERR_FORMAT, "bad dims");
    wr32(g + fc1 + 76 + 4, 1u << 20); /* fine alone, more floats than the payload holds */
    GRAPH_CASE(NZ_ERR_SHAPE, "(tensor fc1.W): payload is");
    wr32(g + fc1 + 76 + 4, 0);
    GRAPH_CASE(NZ_ERR_FORMAT, "bad dims");
    wr32(g + fc1 + 76 + 4 + 12, 7); /* a dim past ndim must be 0 */
    GRAPH_CASE(NZ_ERR_FORMAT, "bad dims");
    wr32(g + fc1 + 76, 5);
    GRAPH_CASE(NZ_ERR_FORMAT, "ndim 5");
    /* attributes the tensors agree with but the op does not: kernel 3 -> 5 */
    wr32(g + conv + 52, 5);
    wr32(g + conv + 56, 5);
    GRAPH_CASE(NZ_ERR_SHAPE, "section 1 (graph): node 'conv1'");
    wr32(g + conv + 60, 0); /* stride 0: the reader must not divide by it */
    GRAPH_CASE(NZ_ERR_SHAPE, "conv1");
    wr32(g + graph_node_pos(g, 3) + 60, 0);
    GRAPH_CASE(NZ_ERR_SHAPE, "pool1");
    wr32(g + conv + 64, 0x80000000u);
    GRAPH_CASE(NZ_ERR_FORMAT, "attribute out of range");
    wr32(g + conv, 99);
    GRAPH_CASE(NZ_ERR_UNSUPPORTED, "unknown op 99");
    wr32(g + conv, NZ_OP_INPUT);
    GRAPH_CASE(NZ_ERR_FORMAT, "input node out of place");
    memset(g + conv + 4, 'A', 32);
    GRAPH_CASE(NZ_ERR_FORMAT, "NUL-terminated");
    g[conv + 4 + 30] = 'Z';
    GRAPH_CASE(NZ_ERR_FORMAT, "NUL padded");
    wr32(g + conv + 40, 1); /* input from itself */
    GRAPH_CASE(NZ_ERR_FORMAT, "bad input");
    wr32(g + conv + 40, 0xffffffffu);
    GRAPH_CASE(NZ_ERR_FORMAT, "bad input");
    wr32(g + conv + 44, 0); /* unused input slot must be -1 */
    GRAPH_CASE(NZ_ERR_FORMAT, "bad input");
    wr32(g + conv + 36, 3);
    GRAPH_CASE(NZ_ERR_FORMAT, "3 inputs");
    wr32(g + conv + 72, 5);
    GRAPH_CASE(NZ_ERR_FORMAT, "parameter count");
    wr32(g + 56, NZF_MAX_NODES + 1);
    GRAPH_CASE(NZ_ERR_FORMAT, "node count");
    wr32(g + 56, 1000); /* within the limit, more than the section holds */
    GRAPH_CASE(NZ_ERR_FORMAT, "node count");
    wr32(g + 56, 8); /* one node fewer: trailing bytes */
    GRAPH_CASE(NZ_ERR_FORMAT, "trailing");
    wr32(g + 0, 0x80000000u);
    GRAPH_CASE(NZ_ERR_FORMAT, "out of range");
    wr32(g + 0, 2); /* 2 channels: the input no longer matches conv1.W */
    GRAPH_CASE(NZ_ERR_SHAPE, "conv1");
    wr32(g + 12, 4); /* classes */
    GRAPH_CASE(NZ_ERR_SHAPE, "classes");
    wr32(g + 16, 0xbf800000u); /* scale -1 */
    GRAPH_CASE(NZ_ERR_FORMAT, "preprocessing");
    wr32(g + fc1 + 68, 0x7fc00000u); /* NaN dropout p on a dense node is ignored... */
    f = assemble(s, ns, &m);
    nz_model mm;
    CHECK(nz_load_buffer(f, m, g_path, &mm, NULL, &err) == NZ_OK, "%s", err.msg);
    nz_model_free(&mm);
    free(f);
    RESET_GRAPH();
    wr32(g + graph_node_pos(g, 7) + 68, 0x7fc00000u); /* ...but not on a dropout node */
    GRAPH_CASE(NZ_ERR_SHAPE, "drop1");
    s[1].len -= 1;
    GRAPH_CASE(NZ_ERR_FORMAT, "graph");
    s[1].len = 30;
    GRAPH_CASE(NZ_ERR_FORMAT, "too short");
    free(g0);
#undef GRAPH_CASE
#undef RESET_GRAPH
    free_split(s, ns);
}

static void test_meta_cases(const uint8_t *f0) {
    tsec s[MAX_TSEC];
    int ns = split(f0, s);
    uint8_t *mt = s[0].data;
    size_t len0 = s[0].len, m;
    uint8_t *keep = malloc(len0 + 64), *f;
    memcpy(keep, mt, len0);
#define META_CASE(want, needle)                                                                \
    do {                                                                                       \
        f = assemble(s, ns, &m);                                                               \
        EXPECT_FAIL(f, m, want, needle);                                                       \
        free(f);                                                                               \
        memcpy(mt, keep, len0);                                                                \
        s[0].len = len0;                                                                       \
    } while (0)
    /* entry 0 is arch: u16 4, "arch", u32 4, "tiny" */
    wr32(mt, NZF_MAX_META + 1);
    META_CASE(NZ_ERR_FORMAT, "entry count");
    wr32(mt, 200);
    META_CASE(NZ_ERR_FORMAT, "entry count");
    mt[4] = 0;
    mt[5] = 0; /* empty key: the rest no longer parses */
    META_CASE(NZ_ERR_FORMAT, "entry 0");
    wr32(mt + 10, 0xfffffff0u);
    META_CASE(NZ_ERR_FORMAT, "past the end");
    mt[16] = 0; /* NUL inside "tiny" */
    META_CASE(NZ_ERR_FORMAT, "bad key or value");
    /* a second "arch" entry in place of created_by */
    memcpy(mt + 18, "\x04\x00" "arch", 6);
    memmove(mt + 24, mt + 30, len0 - 30);
    s[0].len = len0 - 6;
    f = assemble(s, ns, &m);
    EXPECT_FAIL(f, m, NZ_ERR_FORMAT, "duplicate key 'arch'");
    free(f);
    memcpy(mt, keep, len0);
    s[0].len = len0 + 3;
    META_CASE(NZ_ERR_FORMAT, "trailing");
    s[0].len = 2;
    META_CASE(NZ_ERR_FORMAT, "entry count");
#undef META_CASE
    free(keep);
    free_split(s, ns);
}

/* Saves that must fail without touching what is already at the path. */
static void test_atomic_save(void) {
    nz_error err = {0};
    nz_model a, big;
    build_model(&a, &err);
    char p[700], q[700];
    size_t n0, n1;
    uint8_t *before = read_all(g_path, &n0), *after;

    /* into a missing directory: an error naming the path, nothing created */
    snprintf(p, sizeof p, "%s/missing/x.nnz", g_dir);
    nz_status st = nz_save(&a, NULL, p, &err);
    CHECK(st == NZ_ERR_IO && strstr(err.msg, p) && strstr(err.msg, "cannot write"),
          "missing dir: %s %s", nz_status_name(st), err.msg);
    snprintf(q, sizeof q, "%s/missing", g_dir);
    CHECK(access(q, F_OK) != 0, "missing dir was created");

    /* over a directory: rename fails after the temp file was written; it must be removed */
    snprintf(p, sizeof p, "%s/adir", g_dir);
    mkdir(p, 0755);
    st = nz_save(&a, NULL, p, &err);
    CHECK(st == NZ_ERR_IO && strstr(err.msg, p), "over a directory: %s", err.msg);
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && S_ISDIR(sb.st_mode), "directory replaced");
    rmdir(p);

    /* running out of space mid-write (a file size limit stands in for a full disk) over an
     * existing model: the old file must be intact */
    CHECK(nz_zoo_build(&big, "lenet300", (nz_shape){1, 28, 28}, 10, &err) == NZ_OK, "%s",
          err.msg);
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    struct rlimit lim = old;
    lim.rlim_cur = 64 * 1024;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    st = nz_save(&big, NULL, g_path, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    CHECK(st == NZ_ERR_IO && strncmp(err.msg, g_path, strlen(g_path)) == 0 &&
              strstr(err.msg, "cannot write"),
          "disk full: %s %s", nz_status_name(st), err.msg);
    after = read_all(g_path, &n1);
    CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0,
          "a failed save modified the existing file");
    free(after);
    nz_model_free(&big);

    /* a read-only directory (not enforced for root, so only checked as a normal user) */
    if (geteuid() != 0) {
        chmod(g_dir, 0555);
        st = nz_save(&a, NULL, g_path, &err);
        chmod(g_dir, 0755);
        CHECK(st == NZ_ERR_IO && strstr(err.msg, g_path), "read-only dir: %s", err.msg);
        after = read_all(g_path, &n1);
        CHECK(after && n0 == n1 && memcmp(before, after, n0) == 0, "read-only dir: modified");
        free(after);
    }

    /* an invalid model is refused before any file is made */
    snprintf(p, sizeof p, "%s/invalid.nnz", g_dir);
    a.nodes[1].units = 5;
    CHECK(nz_save(&a, NULL, p, &err) != NZ_OK && strstr(err.msg, p), "invalid: %s", err.msg);
    CHECK(access(p, F_OK) != 0, "invalid model wrote a file");
    a.nodes[1].units = 3;

    /* too many meta entries once arch and created_by are added */
    nz_meta *meta = calloc(1, sizeof *meta);
    for (int i = 0; i < (int)NZF_MAX_META; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        nz_meta_set(meta, k, "v");
    }
    CHECK(nz_save(&a, meta, p, &err) == NZ_ERR_ARG && access(p, F_OK) != 0, "%s", err.msg);
    meta->n = (int)NZF_MAX_META - 2;
    nz_meta *back = calloc(1, sizeof *back);
    CHECK(nz_save(&a, meta, p, &err) == NZ_OK, "%s", err.msg);
    CHECK(nz_load(p, &big, back, &err) == NZ_OK ? (nz_model_free(&big), 1) : 0, "%s", err.msg);
    CHECK(back->n == (int)NZF_MAX_META && strcmp(nz_meta_get(back, "k253"), "v") == 0,
          "full meta round trip: %d", back->n);
    unlink(p);
    free(meta);
    free(back);

    /* a successful save replaces the file */
    a.params[0] = 42.0f;
    CHECK(nz_save(&a, NULL, g_path, &err) == NZ_OK, "%s", err.msg);
    nz_model b;
    CHECK(nz_load(g_path, &b, NULL, &err) == NZ_OK && b.params[0] == 42.0f, "%s", err.msg);
    nz_model_free(&b);
    CHECK(count_tmp_files(g_dir) == 0, "temporary files left behind");

    nz_model_free(&a);
    free(before);
}

/* ---------------------------------------------------------------- residual networks */

/* Deterministic values for every slot, running variances positive, nothing zero. */
static void fill_params(nz_model *m) {
    for (int i = 0; i < m->n_nodes; i++) {
        const nz_node *n = &m->nodes[i];
        for (int k = 0; k < n->n_params; k++) {
            const nz_param *p = &n->params[k];
            for (size_t j = 0; j < p->n; j++) {
                float v = (float)((p->off + j) % 977) * 1e-3f - 0.4f;
                if (n->op == NZ_OP_BATCHNORM && k == 3) v = 0.5f + (float)j * 0.01f;
                if (n->op == NZ_OP_BATCHNORM && k == 2) v = 0.1f - (float)j * 0.003f;
                m->params[p->off + j] = v == 0.0f ? 1e-3f : v;
            }
        }
    }
}

/* The zoo's resnet20 with trained-looking running statistics: save and load give the same
 * graph (add nodes with their two inputs, option-A shortcuts with channels and stride) and the
 * same bits, and saving what was loaded gives the same file. */
static void test_resnet_round_trip(void) {
    nz_error err = {0};
    nz_model a, b;
    if (nz_zoo_build(&a, "resnet20", (nz_shape){3, 32, 32}, 10, &err) != NZ_OK) {
        CHECK(0, "resnet20: %s", err.msg);
        return;
    }
    fill_params(&a);
    char p1[700], p2[700];
    snprintf(p1, sizeof p1, "%s/resnet20.nnz", g_dir);
    snprintf(p2, sizeof p2, "%s/resnet20-again.nnz", g_dir);
    CHECK(nz_save(&a, NULL, p1, &err) == NZ_OK, "save resnet20: %s", err.msg);
    if (nz_load(p1, &b, NULL, &err) != NZ_OK) {
        CHECK(0, "load resnet20: %s", err.msg);
        nz_model_free(&a);
        unlink(p1);
        return;
    }
    char why[128] = "";
    CHECK(models_equal(&a, &b, why, sizeof why), "resnet20 round trip differs: %s", why);
    CHECK(nz_model_validate(&b, &err) == NZ_OK, "resnet20 validate: %s", err.msg);
    int adds = 0, shorts = 0, bns = 0, ok = 1;
    for (int i = 0; i < b.n_nodes; i++) {
        const nz_node *n = &b.nodes[i];
        if (n->op == NZ_OP_ADD) {
            adds++;
            ok &= n->n_inputs == 2 && n->inputs[0] == a.nodes[i].inputs[0] &&
                  n->inputs[1] == a.nodes[i].inputs[1] && n->inputs[1] < i;
        }
        if (n->op == NZ_OP_SHORTCUT) {
            shorts++;
            ok &= n->units == a.nodes[i].units && n->stride == 2 && n->n_params == 0;
        }
        if (n->op == NZ_OP_BATCHNORM) {
            bns++;
            ok &= n->n_params == 4 && memcmp(&n->p, &a.nodes[i].p, 4) == 0 &&
                  b.params[n->params[2].off] != 0.0f && b.params[n->params[3].off] != 1.0f;
        }
    }
    CHECK(ok && adds == 9 && shorts == 2 && bns == 19,
          "resnet20 after loading: %d adds, %d shortcuts, %d batch norms (want 9, 2, 19)", adds,
          shorts, bns);
    CHECK(nz_save(&b, NULL, p2, &err) == NZ_OK, "resave resnet20: %s", err.msg);
    size_t n1, n2;
    uint8_t *f1 = read_all(p1, &n1), *f2 = read_all(p2, &n2);
    CHECK(f1 && f2 && n1 == n2 && memcmp(f1, f2, n1) == 0, "resnet20: resave differs");
    free(f1);
    free(f2);
    unlink(p1);
    unlink(p2);
    nz_model_free(&a);
    nz_model_free(&b);
}

/* conv -> bn -> relu -> conv -> bn, add(bn2, relu1), relu -> avgpool -> shortcut -> gap ->
 * flatten -> fc: every new op kind in a few hundred bytes. */
static nz_status build_residual(nz_model *m, nz_error *err) {
    nz_status st = nz_model_init(m, "residual", (nz_shape){2, 6, 6}, 3, err);
    if (st) return st;
    int x = nz_model_add_conv2d(m, "conv1", 0, 4, 3, 1, 1, err), r1;
    if (x >= 0) x = nz_model_add_batchnorm(m, "bn1", x, err);
    if (x >= 0) x = nz_model_add_relu(m, "relu1", x, err);
    r1 = x;
    if (x >= 0) x = nz_model_add_conv2d(m, "conv2", x, 4, 3, 1, 1, err);
    if (x >= 0) x = nz_model_add_batchnorm(m, "bn2", x, err);
    if (x >= 0) x = nz_model_add_add(m, "add", x, r1, err);
    if (x >= 0) x = nz_model_add_relu(m, "relu2", x, err);
    if (x >= 0) x = nz_model_add_avgpool(m, "pool", x, 2, 2, err);
    if (x >= 0) x = nz_model_add_shortcut(m, "short", x, 8, 2, err);
    if (x >= 0) x = nz_model_add_gap(m, "gap", x, err);
    if (x >= 0) x = nz_model_add_flatten(m, "flatten", x, err);
    if (x >= 0) x = nz_model_add_dense(m, "fc", x, 3, err);
    if (x < 0) {
        nz_model_free(m);
        return err->code;
    }
    fill_params(m);
    return NZ_OK;
}

/* GRAPH surgery on the residual model: the add's second input, input counts, and the new ops'
 * attributes. Nodes: 0 input, 1 conv1, 2 bn1, 3 relu1, 4 conv2, 5 bn2, 6 add, 7 relu2, 8 pool,
 * 9 short, 10 gap, 11 flatten, 12 fc. */
static void test_residual_graph_cases(void) {
    nz_error err = {0};
    nz_model a, b;
    CHECK(build_residual(&a, &err) == NZ_OK, "build residual: %s", err.msg);
    if (err.code) return;
    char p[700];
    snprintf(p, sizeof p, "%s/residual.nnz", g_dir);
    CHECK(nz_save(&a, NULL, p, &err) == NZ_OK, "save residual: %s", err.msg);
    CHECK(nz_load(p, &b, NULL, &err) == NZ_OK, "load residual: %s", err.msg);
    if (err.code == NZ_OK) {
        char why[128] = "";
        CHECK(models_equal(&a, &b, why, sizeof why), "residual round trip differs: %s", why);
        nz_model_free(&b);
    }
    size_t n = 0;
    uint8_t *f0 = read_all(p, &n);
    unlink(p);
    nz_model_free(&a);
    if (!f0) {
        CHECK(0, "cannot read %s back", p);
        return;
    }
    tsec s[MAX_TSEC];
    int ns = split(f0, s);
    free(f0);
    CHECK(ns >= 2 && s[1].kind == NZF_SEC_GRAPH, "residual layout: %d sections", ns);
    uint8_t *g = s[1].data, *f;
    const size_t glen = s[1].len;
    uint8_t *g0 = malloc(glen);
    memcpy(g0, g, glen);
    size_t m;
#define RESET_GRAPH() (memcpy(g, g0, glen), s[1].len = glen)
#define GRAPH_CASE(want, needle)                                                               \
    do {                                                                                       \
        f = assemble(s, ns, &m);                                                               \
        EXPECT_FAIL(f, m, want, needle);                                                       \
        free(f);                                                                               \
        RESET_GRAPH();                                                                         \
    } while (0)
    const size_t add = graph_node_pos(g, 6), relu2 = graph_node_pos(g, 7);
    const size_t bn1 = graph_node_pos(g, 2), pool = graph_node_pos(g, 8),
                 sc = graph_node_pos(g, 9);
    CHECK(rd32(g + add) == NZ_OP_ADD && rd32(g + add + 36) == 2 && rd32(g + add + 40) == 5 &&
              rd32(g + add + 44) == 3,
          "residual GRAPH: node 6 is not add(5, 3)");
    /* the unmodified sections load */
    f = assemble(s, ns, &m);
    CHECK(nz_load_buffer(f, m, g_path, &b, NULL, &err) == NZ_OK, "reassembled: %s", err.msg);
    if (err.code == NZ_OK) nz_model_free(&b);
    free(f);

    /* the add's second input must be an earlier node */
    wr32(g + add + 44, 6); /* itself */
    GRAPH_CASE(NZ_ERR_FORMAT, "node 6 ('add'): bad input 1 (6)");
    wr32(g + add + 44, 7); /* a later node */
    GRAPH_CASE(NZ_ERR_FORMAT, "node 6 ('add'): bad input 1 (7)");
    wr32(g + add + 44, 1000);
    GRAPH_CASE(NZ_ERR_FORMAT, "node 6 ('add'): bad input 1");
    wr32(g + add + 44, 0xffffffffu); /* -1 while n_inputs says 2 */
    GRAPH_CASE(NZ_ERR_FORMAT, "node 6 ('add'): bad input 1 (-1)");
    wr32(g + add + 40, 9); /* the first one too */
    GRAPH_CASE(NZ_ERR_FORMAT, "node 6 ('add'): bad input 0 (9)");
    /* an earlier node of another shape: the data (2x6x6) for 4x6x6 */
    wr32(g + add + 44, 0);
    GRAPH_CASE(NZ_ERR_SHAPE, "node 'add': adds 4x6x6 to 2x6x6");
    /* an add with one input; a one-input op with two */
    wr32(g + add + 36, 1);
    wr32(g + add + 44, 0xffffffffu);
    GRAPH_CASE(NZ_ERR_FORMAT, "node 'add': add takes 2 input(s), has 1");
    wr32(g + relu2 + 36, 2);
    wr32(g + relu2 + 44, 3);
    GRAPH_CASE(NZ_ERR_FORMAT, "node 'relu2': relu takes 1 input(s), has 2");
    /* attributes of the new ops */
    wr32(g + bn1 + 68, 0); /* momentum 0 */
    GRAPH_CASE(NZ_ERR_SHAPE, "node 'bn1': batch norm momentum 0 not in");
    wr32(g + bn1 + 68, 0x7fc00000u); /* momentum NaN */
    GRAPH_CASE(NZ_ERR_SHAPE, "node 'bn1': batch norm momentum nan");
    wr32(g + bn1 + 68, 0x3fc00000u); /* momentum 1.5 */
    GRAPH_CASE(NZ_ERR_SHAPE, "node 'bn1': batch norm momentum 1.5");
    wr32(g + bn1 + 76 + 20 * 3 + 4, 5); /* running_var [4] -> [5] */
    GRAPH_CASE(NZ_ERR_SHAPE, "(tensor bn1.p3): payload");
    wr32(g + sc + 48, 2); /* shortcut to fewer channels than its input's 4 */
    GRAPH_CASE(NZ_ERR_SHAPE, "node 'short': bad shortcut 4 -> 2 channels");
    wr32(g + sc + 60, 0); /* stride 0 */
    GRAPH_CASE(NZ_ERR_SHAPE, "node 'short': bad shortcut 4 -> 8 channels, stride 0");
    wr32(g + pool + 52, 7); /* a 7x7 window on 6x6 */
    wr32(g + pool + 56, 7);
    GRAPH_CASE(NZ_ERR_SHAPE, "node 'pool': bad pool window 7x7 on 6x6");
    wr32(g + pool + 60, 0); /* stride 0 */
    GRAPH_CASE(NZ_ERR_SHAPE, "node 'pool': bad pool window");
#undef GRAPH_CASE
#undef RESET_GRAPH
    free(g0);
    free_split(s, ns);
}

static void test_missing_file(void) {
    char p[700];
    snprintf(p, sizeof p, "%s/does-not-exist.nnz", g_dir);
    nz_model m;
    nz_meta meta;
    nz_error err = {0};
    CHECK(nz_load(p, &m, &meta, &err) == NZ_ERR_IO && strstr(err.msg, p) &&
              strstr(err.msg, "No such file"),
          "%s", err.msg);
    CHECK(is_zero(&m, sizeof m) && meta.n == 0, "outputs not zeroed");
    nz_file_stats st;
    CHECK(nz_file_stats_read(p, &st, &err) == NZ_ERR_IO && strstr(err.msg, p), "%s", err.msg);
    CHECK(nz_load(g_dir, &m, NULL, &err) == NZ_ERR_IO && strstr(err.msg, g_dir), "dir: %s",
          err.msg);
    snprintf(p, sizeof p, "%s/empty.nnz", g_dir);
    write_all(p, "", 0);
    CHECK(nz_load(p, &m, NULL, &err) == NZ_ERR_CORRUPT && strstr(err.msg, p), "empty: %s",
          err.msg);
    unlink(p);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/nnz_test_format.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_path, sizeof g_path, "%s/model.nnz", g_dir);

    test_meta_api();
    test_round_trip();
    size_t n = 0;
    uint8_t *f = read_all(g_path, &n);
    CHECK(f != NULL && n > 0, "reading back %s", g_path);
    if (f) {
        test_truncation(f, n);
        test_bit_flips(f, n);
        test_header_cases(f, n);
        test_section_cases(f, n);
        test_meta_cases(f);
        free(f);
    }
    test_atomic_save();
    test_missing_file();
    test_resnet_round_trip();
    test_residual_graph_cases();

    CHECK(count_tmp_files(g_dir) == 0, "temporary files left behind");
    unlink(g_path);
    CHECK(rmdir(g_dir) == 0, "test directory not empty: %s", strerror(errno));
    return tl_finish("test_format");
}
