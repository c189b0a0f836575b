/* fuzz_util.c - temporary files and quiet streams for the fuzz targets. */
#define _DEFAULT_SOURCE
#include "fuzz_util.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fz_dir[4096];

/* Removes the folder's files (targets write flat names only) and the folder. */
static void fz_cleanup(void) {
    DIR *d = opendir(fz_dir);
    if (d) {
        struct dirent *e;
        char p[8192];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", fz_dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(fz_dir);
}

const char *fz_path(char *buf, size_t cap, const char *name) {
    if (!fz_dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fz_dir, sizeof fz_dir, "%s/kvbench-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fz_cleanup);
    }
    snprintf(buf, cap, "%s/%s", fz_dir, name);
    return buf;
}

int fz_write(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    return (fclose(f) == 0 && w == size) ? 0 : -1;
}

static FILE *fz_null, *fz_out, *fz_err;

void fz_quiet(void) {
    if (!fz_null) fz_null = fopen("/dev/null", "w");
    if (!fz_null) return;
    fflush(stdout);
    fflush(stderr);
    fz_out = stdout;
    fz_err = stderr;
    stdout = fz_null; /* glibc's stdout/stderr are assignable variables */
    stderr = fz_null;
}

void fz_unquiet(void) {
    if (!fz_out) return;
    fflush(fz_null);
    stdout = fz_out;
    stderr = fz_err;
    fz_out = fz_err = NULL;
}
