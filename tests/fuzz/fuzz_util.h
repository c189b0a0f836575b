/* fuzz_util.h - what the fuzz targets share: a private temporary folder
 * (loaders read paths, so an input becomes a file there) and quieting the
 * standard streams of code that prints its errors.
 *
 * Each target defines LLVMFuzzerTestOneInput, which libFuzzer calls
 * (meson -Dfuzz=true, scripts/fuzz.sh) and replay.c calls on the committed
 * corpus in the normal test suite. A target returns 0 for any input; a bug
 * is a crash, a sanitizer report or an abort() on a broken invariant. */
#ifndef FZ_FUZZ_UTIL_H
#define FZ_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The path of `name` in this process's temporary folder (made on first use
 * under $TMPDIR or /tmp, removed at exit with what is left in it). The
 * result is a static buffer per call site's `buf`. */
const char *fz_path(char *buf, size_t cap, const char *name);

/* Writes data[0..size) to `path`; 0 on success. */
int fz_write(const char *path, const void *data, size_t size);

/* Points stdout and stderr (the FILE objects, not the descriptors) at
 * /dev/null until fz_unquiet(). The descriptors stay, so a sanitizer's
 * report, which writes to descriptor 2, still shows. */
void fz_quiet(void);
void fz_unquiet(void);

#endif
