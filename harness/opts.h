/* opts.h - table-driven command-line options for kvbench's subcommands.
 * Every option is `--name VALUE`, `--name=VALUE` or (flags) `--name`;
 * a one-letter alias may be given as `-x VALUE`. Unknown options, missing
 * values and malformed numbers are errors naming the option. */
#ifndef HX_OPTS_H
#define HX_OPTS_H

#include <stdint.h>

typedef enum hx_opt_kind { HX_OPT_STR, HX_OPT_INT, HX_OPT_U64, HX_OPT_FLOAT, HX_OPT_FLAG } hx_opt_kind;

typedef struct hx_opt {
    const char *name; /* without the dashes */
    char alias;       /* 0 = none */
    hx_opt_kind kind;
    void *dst;        /* const char **, int *, uint64_t *, float *, int * */
    const char *meta; /* value placeholder for help ("N"), NULL for flags */
    const char *help;
} hx_opt;

/* Parses argv[0..argc) (argv[0] is the first argument after the
 * subcommand). Positional arguments are collected into pos[0..max_pos).
 * Returns 0, or prints an error to stderr and returns -1. */
int hx_opts_parse(const char *cmd, int argc, char **argv, const hx_opt *opts, int n_opts,
                  const char **pos, int max_pos, int *n_pos);

/* Prints the option table (for `kvbench help CMD`). */
void hx_opts_print(const hx_opt *opts, int n_opts);

/* The number of entries of an hx_opt array. */
#ifndef N_OPTS
#define N_OPTS(a) (int)(sizeof(a) / sizeof((a)[0]))
#endif

#endif
