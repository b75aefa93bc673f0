/* nnzip error reporting: every library call that can fail returns an nz_status and, when given
 * an nz_error, fills a one-line message naming the file/section and the problem. The library
 * never prints and never exits; tools/ turns errors into messages and exit codes. */
#ifndef NNZIP_ERROR_H
#define NNZIP_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    NZ_OK = 0,
    NZ_ERR_IO = 1,          /* cannot open/read/write a file */
    NZ_ERR_FORMAT = 2,      /* wrong magic, version, or structure */
    NZ_ERR_CORRUPT = 3,     /* checksum mismatch or length past the end */
    NZ_ERR_NOMEM = 4,
    NZ_ERR_ARG = 5,         /* invalid argument from the caller/user */
    NZ_ERR_SHAPE = 6,       /* shapes do not agree */
    NZ_ERR_UNSUPPORTED = 7, /* valid but not handled (newer version, unknown kind) */
    NZ_ERR_INTERRUPTED = 8
} nz_status;

typedef struct {
    nz_status code;
    char msg[512];
} nz_error;

/* Records code and a printf-style message in e (if non-NULL); returns code. */
nz_status nz_fail(nz_error *e, nz_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *nz_status_name(nz_status s);

#ifdef __cplusplus
}
#endif
#endif
