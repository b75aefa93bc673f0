/* Error records: one formatted line per failure, carried back to the caller. */
#include "nnzip/error.h"

#include <stdarg.h>
#include <stdio.h>

nz_status nz_fail(nz_error *e, nz_status code, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

const char *nz_status_name(nz_status s) {
    switch (s) {
    case NZ_OK: return "ok";
    case NZ_ERR_IO: return "i/o error";
    case NZ_ERR_FORMAT: return "bad format";
    case NZ_ERR_CORRUPT: return "corrupt data";
    case NZ_ERR_NOMEM: return "out of memory";
    case NZ_ERR_ARG: return "invalid argument";
    case NZ_ERR_SHAPE: return "shape mismatch";
    case NZ_ERR_UNSUPPORTED: return "unsupported";
    case NZ_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown error";
}
