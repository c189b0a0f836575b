/* replay.c - a plain main() for a fuzz target: calls its
 * LLVMFuzzerTestOneInput on every file named on the command line and on
 * every file of every folder named (sorted by name), so the test suite
 * (and its ASan + UBSan build) exercises each target on its committed
 * corpus without libFuzzer. Fails if a folder holds no file: a corpus
 * that is not found would otherwise pass unnoticed. */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_util.h"

/* Reads a whole file; NULL on error (the caller reports it). */
static uint8_t *fz_read(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            uint8_t *g = realloc(b, cap *= 2);
            if (!g) free(b);
            b = g;
        }
    }
    if (b && ferror(f)) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *size = n;
    return b;
}

static int fz_replay_file(const char *path) {
    size_t n;
    uint8_t *b = fz_read(path, &n);
    if (!b) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        return -1;
    }
    /* a copy of exactly n bytes, so ASan sees a read past the input's end */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) abort();
    memcpy(exact, b, n);
    free(b);
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int fz_by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Replays the regular files of a folder; the number replayed or -1. */
static int fz_replay_dir(const char *dir) {
    struct dirent **e;
    int n = scandir(dir, &e, NULL, fz_by_name), done = 0;
    if (n < 0) {
        fprintf(stderr, "replay: cannot read folder %s\n", dir);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char p[8192];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e[i]->d_name);
        if (e[i]->d_name[0] != '.' && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            if (fz_replay_file(p) < 0) done = -1;
            else if (done >= 0) done++;
        }
        free(e[i]);
    }
    free(e);
    if (done == 0) fprintf(stderr, "replay: no input in %s\n", dir);
    return done > 0 ? done : -1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|FOLDER...\n", argv[0]);
        return 2;
    }
    int total = 0, bad = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        int r = (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) ? fz_replay_dir(argv[i]) : fz_replay_file(argv[i]) == 0;
        if (r < 0) bad = 1;
        else total += r;
    }
    printf("replayed %d inputs\n", total);
    return bad;
}
