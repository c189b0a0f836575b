/* cmd_chat.c - `kvbench chat`: a conversation rendered with a model's chat
 * template, printed exactly (datasets/chat.h does the rendering). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../base/file.h"
#include "../base/kv_error.h"
#include "../datasets/chat.h"
#include "chat_gguf.h"
#include "commands.h"
#include "opts.h"
#include "paths.h"



/* FILE.json: a list of {"role", "content"} objects. The strings stay in
 * *doc, which the caller deletes. */
static int read_messages(const char *path, cJSON **doc, ds_chat_msg **out, int *n) {
    char *text;
    int rc = kv_read_file(path, &text, NULL);
    if (rc) return rc;
    *doc = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsArray(*doc)) return kv_errorf(KV_EFORMAT, "%s: expected a JSON list of {\"role\", \"content\"}", path);
    *n = cJSON_GetArraySize(*doc);
    *out = calloc((size_t)*n + 1, sizeof **out);
    if (!*out) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int i = 0; i < *n; i++) {
        const cJSON *m = cJSON_GetArrayItem(*doc, i);
        (*out)[i].role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
        (*out)[i].content = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "content"));
        if (!(*out)[i].role || !(*out)[i].content)
            return kv_errorf(KV_EFORMAT, "%s: message %d: expected string fields \"role\" and \"content\"", path, i);
    }
    return 0;
}

static void list_families(void) {
    printf("%-20s %-24s %-28s %s\n", "family", "bos", "eos", "models");
    for (int i = 0; i < ds_chat_count(); i++) {
        const ds_chat_family *f = ds_chat_at(i);
        char name[64];
        snprintf(name, sizeof name, "%s@%d", ds_chat_name(f), ds_chat_version(f));
        printf("%-20s %-24s %-28s %s\n", name, *ds_chat_bos(f) ? ds_chat_bos(f) : "-", ds_chat_eos(f),
               ds_chat_models(f));
    }
}

typedef struct chat_args {
    const char *template_path, *tokenizer, *model, *messages, *bos, *eos, *as, *date;
    int gp, no_thinking, list;
} chat_args;

/* Reads the template and its bos/eos from the one source given; *where
 * names it for the report line. */
static int load_source(const chat_args *a, ds_chat_source *src, char *where, size_t cap) {
    char buf[4096];
    if (a->template_path) {
        snprintf(where, cap, "%s", hx_resolve_model(a->template_path, buf, sizeof buf));
        memset(src, 0, sizeof *src);
        return kv_read_file(where, &src->jinja, NULL);
    }
    if (a->tokenizer) {
        snprintf(where, cap, "%s/tokenizer_config.json", hx_resolve_model(a->tokenizer, buf, sizeof buf));
        return ds_chat_source_config(where, src);
    }
    const char *path = hx_resolve_model(a->model, buf, sizeof buf);
    snprintf(where, cap, "%s (tokenizer.chat_template)", path);
    return hx_chat_source_gguf(path, src);
}

static int render(const chat_args *a, ds_chat_source *src) {
    char where[4200];
    int rc = load_source(a, src, where, sizeof where);
    if (rc) return rc;
    const ds_chat_family *f;
    if ((rc = ds_chat_resolve(a->as ? a->as : "auto", src->jinja, &f))) return rc;
    if (!f) return kv_errorf(KV_EINVAL, "--as none renders nothing; give a family name");
    fprintf(stderr, "kvbench chat: %s@%d (%s from %s)\n", ds_chat_name(f), ds_chat_version(f),
            a->as ? "as asked" : "recognised", where);
    cJSON *doc = NULL;
    ds_chat_msg *msgs = NULL;
    int n = 0;
    if (!(rc = read_messages(a->messages, &doc, &msgs, &n))) {
        ds_chat_opts o = ds_chat_default_opts();
        o.add_generation_prompt = a->gp;
        o.bos = a->bos ? a->bos : src->bos;
        o.eos = a->eos ? a->eos : src->eos;
        o.date = a->date;
        o.jinja = src->jinja; /* Mistral v7 Tekken's default system message */
        if (a->no_thinking) o.enable_thinking = 0;
        char *out;
        size_t len;
        if (!(rc = ds_chat_render(f, msgs, n, &o, &out, &len))) {
            fwrite(out, 1, len, stdout);
            free(out);
        }
    }
    free(msgs);
    cJSON_Delete(doc);
    return rc;
}

int hx_cmd_chat(int argc, char **argv, int help) {
    chat_args a = {0};
    hx_opt opts[] = {
        {"template", 0, HX_OPT_STR, &a.template_path, "FILE", "a chat template (Jinja text)"},
        {"tokenizer", 0, HX_OPT_STR, &a.tokenizer, "DIR", "a folder with tokenizer_config.json (chat_template, bos/eos)"},
        {"model", 0, HX_OPT_STR, &a.model, "M", "a GGUF model (tokenizer.chat_template, its bos/eos tokens)"},
        {"messages", 0, HX_OPT_STR, &a.messages, "FILE", "a JSON list of {\"role\", \"content\"}"},
        {"generation-prompt", 0, HX_OPT_FLAG, &a.gp, NULL, "end with the assistant's header"},
        {"bos", 0, HX_OPT_STR, &a.bos, "TEXT", "BOS text (default: the source's, else the family's)"},
        {"eos", 0, HX_OPT_STR, &a.eos, "TEXT", "EOS text (default: the source's, else the family's)"},
        {"as", 0, HX_OPT_STR, &a.as, "NAME", "render as this family, whatever the template (chat = NAME)"},
        {"date", 0, HX_OPT_STR, &a.date, "YYYY-MM-DD", "the date templates print (default 2024-07-26)"},
        {"no-thinking", 0, HX_OPT_FLAG, &a.no_thinking, NULL, "Qwen3: enable_thinking = false"},
        {"list", 0, HX_OPT_FLAG, &a.list, NULL, "list the template families"},
    };
    if (help) {
        printf("usage: kvbench chat (--template FILE.jinja | --tokenizer DIR | --model M) --messages FILE.json\n"
               "                    [--generation-prompt] [--bos TEXT --eos TEXT] [--as NAME]\n"
               "       kvbench chat --list\n\n"
               "Prints the conversation exactly as the model's chat template renders it. The template\n"
               "is recognised by its family's distinctive text (docs/CHAT.md); --as NAME names one.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("chat", argc, argv, opts, N_OPTS(opts), pos, 0, &np)) return 2;
    if (a.list) {
        list_families();
        return 0;
    }
    int sources = !!a.template_path + !!a.tokenizer + !!a.model;
    if (sources != 1 || !a.messages) {
        fprintf(stderr, "kvbench chat: give one of --template, --tokenizer, --model, and --messages\n");
        return 2;
    }
    ds_chat_source src = {0};
    int rc = render(&a, &src);
    if (rc) fprintf(stderr, "kvbench chat: %s\n", kv_last_error());
    ds_chat_source_free(&src);
    return rc ? 1 : 0;
}
