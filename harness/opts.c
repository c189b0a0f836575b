/* opts.c - see opts.h. */
#include "opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const hx_opt *find_opt(const hx_opt *opts, int n, const char *name, size_t len, char alias) {
    for (int i = 0; i < n; i++) {
        if (alias && opts[i].alias == alias) return &opts[i];
        if (!alias && strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) return &opts[i];
    }
    return NULL;
}

static int set_value(const char *cmd, const hx_opt *o, const char *v) {
    char *end;
    errno = 0;
    switch (o->kind) {
    case HX_OPT_STR:
        *(const char **)o->dst = v;
        return 0;
    case HX_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < -2147483647L || x > 2147483647L) break;
        *(int *)o->dst = (int)x;
        return 0;
    }
    case HX_OPT_U64: {
        if (v[0] == '-') break;
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end) break;
        *(uint64_t *)o->dst = x;
        return 0;
    }
    case HX_OPT_FLOAT: {
        float x = strtof(v, &end);
        if (errno || end == v || *end) break;
        *(float *)o->dst = x;
        return 0;
    }
    case HX_OPT_FLAG:
        *(int *)o->dst = 1;
        return 0;
    }
    fprintf(stderr, "kvbench %s: option --%s: expected %s, got '%s'\n", cmd, o->name,
            o->kind == HX_OPT_FLOAT ? "a number" : o->kind == HX_OPT_U64 ? "a non-negative integer" : "an integer",
            v);
    return -1;
}

int hx_opts_parse(const char *cmd, int argc, char **argv, const hx_opt *opts, int n_opts,
                  const char **pos, int max_pos, int *n_pos) {
    *n_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == 0) {
            if (*n_pos >= max_pos) {
                fprintf(stderr, "kvbench %s: unexpected argument '%s'\n", cmd, a);
                return -1;
            }
            pos[(*n_pos)++] = a;
            continue;
        }
        const hx_opt *o;
        const char *val = NULL;
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            o = find_opt(opts, n_opts, name, len, 0);
            if (!o) {
                fprintf(stderr, "kvbench %s: unknown option '--%.*s' (see 'kvbench help %s')\n", cmd, (int)len,
                        name, cmd);
                return -1;
            }
            if (eq) val = eq + 1;
        } else {
            o = a[2] == 0 ? find_opt(opts, n_opts, NULL, 0, a[1]) : NULL;
            if (!o) {
                fprintf(stderr, "kvbench %s: unknown option '%s' (see 'kvbench help %s')\n", cmd, a, cmd);
                return -1;
            }
        }
        if (o->kind == HX_OPT_FLAG) {
            if (val) {
                fprintf(stderr, "kvbench %s: option --%s takes no value\n", cmd, o->name);
                return -1;
            }
            *(int *)o->dst = 1;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "kvbench %s: option --%s expects a value (%s)\n", cmd, o->name,
                        o->meta ? o->meta : "VALUE");
                return -1;
            }
            val = argv[++i];
        }
        if (set_value(cmd, o, val)) return -1;
    }
    return 0;
}

void hx_opts_print(const hx_opt *opts, int n_opts) {
    for (int i = 0; i < n_opts; i++) {
        char left[64];
        if (opts[i].alias)
            snprintf(left, sizeof left, "-%c, --%s%s%s", opts[i].alias, opts[i].name, opts[i].meta ? " " : "",
                     opts[i].meta ? opts[i].meta : "");
        else
            snprintf(left, sizeof left, "    --%s%s%s", opts[i].name, opts[i].meta ? " " : "",
                     opts[i].meta ? opts[i].meta : "");
        printf("  %-28s %s\n", left, opts[i].help);
    }
}
