/* main.c - the kvbench command line: dispatches to a subcommand. */
#include <stdio.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "commands.h"

typedef struct hx_cmd {
    const char *name;
    int (*run)(int argc, char **argv, int help);
    const char *summary;
} hx_cmd;

static const hx_cmd commands[] = {
    {"run", hx_cmd_run, "run an experiment's sweep into the results database"},
    {"report", hx_cmd_report, "paper-style tables from the results database"},
    {"plot", hx_cmd_plot, "gnuplot figures (PNG, SVG) from the results database"},
    {"merge", hx_cmd_merge, "combine results databases (the shards of a sweep)"},
    {"score", hx_cmd_score, "ROUGE of any outputs; LongBench's scorers; the lead-N summarization baseline"},
    {"generate", hx_cmd_generate, "generate text from a prompt (sampling, KV bytes held)"},
    {"perplexity", hx_cmd_perplexity, "perplexity of a text file with a sliding window"},
    {"bench", hx_cmd_bench, "prefill and decode speed, bytes read per token"},
    {"info", hx_cmd_info, "print a model's architecture, parameters and bytes"},
    {"list", hx_cmd_list, "list the KV cache policies (and parameters) or the prompt templates"},
    {"chat", hx_cmd_chat, "a conversation rendered with a model's chat template"},
    {"tokenize", hx_cmd_tokenize, "print the token ids and pieces of a text"},
    {"logits", hx_cmd_logits, "write raw logits of a token sequence (reference checks)"},
    {"convert", hx_cmd_convert, "convert a model file to GGUF (optionally requantized)"},
    {"synth", hx_cmd_synth, "write a synthetic Llama or MPT GGUF with random weights"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(void) {
    printf("kvbench - a harness for KV-cache compression research\n\n"
           "usage: kvbench COMMAND [options]\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) printf("  %-12s %s\n", commands[i].name, commands[i].summary);
    printf("  %-12s %s\n", "help", "this list, or 'kvbench help COMMAND' for a command's options");
    printf("\nModels are found under $KVBENCH_MODELS and data under $KVBENCH_DATA when a\n"
           "relative path does not exist as given.\n");
}

static const hx_cmd *find_cmd(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

/* Each sample's KV cache is freed whole when the next begins (no state
 * between samples), and glibc would hand those pages back to the kernel
 * and fault them in, zeroed, again for the next: 1,300 faults per
 * 512-token prompt of the 110M model, 4-5% of its prefill. Kept in the
 * process instead (freed heap under 1 GiB stays; blocks under 32 MB, the
 * most glibc allows, come from the heap). kv_cache_bytes counts what the
 * cache holds, not what the allocator keeps; peak RSS is a peak either
 * way. */
static void keep_freed_memory(void) {
#ifdef __GLIBC__
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
#endif
}

int main(int argc, char **argv) {
    keep_freed_memory();
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "help") == 0) {
        if (argc < 3) {
            usage();
            return 0;
        }
        const hx_cmd *c = find_cmd(argv[2]);
        if (!c) {
            fprintf(stderr, "kvbench: unknown command '%s' (see 'kvbench help')\n", argv[2]);
            return 2;
        }
        return c->run(0, NULL, 1);
    }
    const hx_cmd *c = find_cmd(argv[1]);
    if (!c) {
        fprintf(stderr, "kvbench: unknown command '%s' (see 'kvbench help')\n", argv[1]);
        return 2;
    }
    /* `kvbench CMD --help` (or -h) anywhere among its options: its help */
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return c->run(0, NULL, 1);
    return c->run(argc - 2, argv + 2, 0);
}
