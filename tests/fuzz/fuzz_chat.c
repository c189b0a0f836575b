/* fuzz_chat.c - chat templates (datasets/chat.h): any bytes, as a template's
 * Jinja text, a tokenizer_config.json or a message's text, are recognised,
 * read or rendered, or fail with an error, never crash or read out of
 * bounds; what renders keeps ds_chat_render's promises (a NUL-terminated
 * string of *len bytes, the same for the same call, holding each user
 * message's text). The first byte chooses the input (byte % 3) and the
 * options (byte / 3):
 *   0: the rest is a template's text: ds_chat_detect, ds_chat_resolve, and
 *      when a family is found, renderings of fixed conversations with odd
 *      contents, the template as opts.jinja (as harness/prompt.c passes
 *      it: Mistral v7 Tekken reads its default system message there);
 *   1: the rest is a tokenizer_config.json: ds_chat_source_config, then as
 *      `kvbench chat` does (harness/cmd_chat.c): resolve "auto" and render
 *      with the file's bos/eos;
 *   2: the rest is a message's text, rendered by every family in
 *      conversations where it is the user's, the system's and the
 *      assistant's.
 * Corpus: tests/fuzz/corpus/fuzz_chat/ (the families' detection markers,
 * tokenizer configs right and wrong, odd message texts). */
#define _DEFAULT_SOURCE
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "fuzz_util.h"
#include "kv_error.h"

/* A byte that Python's str.strip() may remove from an end of a string:
 * ASCII white space, the \x1c-\x1f separators, and every byte of a
 * multibyte character (a superset of the Unicode spaces' bytes). What is
 * left after stripping these from both ends lies inside what any family's
 * trim leaves, so it must occur in the rendering. */
static int fz_strippable(unsigned char b) {
    return b == ' ' || (b >= '\t' && b <= '\r') || (b >= 0x1c && b <= 0x1f) || b >= 0x80;
}

/* The user's text must be in the prompt (after the trims templates do). */
static void fz_check_has(const char *out, const char *text) {
    size_t b = 0, e = strlen(text);
    while (b < e && fz_strippable((unsigned char)text[b])) b++;
    while (e > b && fz_strippable((unsigned char)text[e - 1])) e--;
    if (e == b) return;
    char *core = strndup(text + b, e - b);
    if (!core) return;
    if (!strstr(out, core)) abort();
    free(core);
}

/* Renders msgs twice and checks the promises; `user` is a user message's
 * text the rendering must hold (NULL: none checked). */
static void fz_render(const ds_chat_family *f, const ds_chat_msg *m, int n, const ds_chat_opts *o, const char *user) {
    char *out = NULL, *again = NULL;
    size_t len = 0, len2 = 0;
    int rc = ds_chat_render(f, m, n, o, &out, &len);
    if (rc) {
        if (out || !kv_last_error()[0]) abort();
        return;
    }
    /* a C string of len bytes: a NUL inside would cut the prompt short for
     * every caller that takes it by strlen (harness/prompt.c does) */
    if (!out || out[len] != '\0' || strlen(out) != len) abort();
    if (user) fz_check_has(out, user);
    if (ds_chat_render(f, m, n, o, &again, &len2) || len2 != len || memcmp(out, again, len)) abort();
    free(again);
    free(out);
}

static const char SYS[] = "You are {{ helpful }} \xe2\x80\x83" "and {% brief %}.\n";
static const char USER[] = "  Caf\xc3\xa9 {{ x }} [INST] <|im_end|> \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \t";
static const char ANSWER[] = "<think>\nhmm {</think>\n{{\"}}\xf0\x9f\x98\x80";

/* The fixed conversations: with a system message, without, an empty user
 * message, one ending with the assistant, one out of order. */
static void fz_conversations(const ds_chat_family *f, const ds_chat_opts *o) {
    const ds_chat_msg a[] = {{"system", SYS}, {"user", USER}, {"assistant", ANSWER}, {"user", "}}{{"}};
    const ds_chat_msg b[] = {{"user", USER}, {"assistant", ""}, {"user", "{{"}};
    const ds_chat_msg c[] = {{"user", ""}};
    const ds_chat_msg d[] = {{"system", ""}, {"user", USER}, {"assistant", ANSWER}};
    const ds_chat_msg e[] = {{"assistant", ANSWER}, {"user", USER}, {"user", "x"}};
    fz_render(f, a, 4, o, "}}{{");
    fz_render(f, a, 2, o, USER);
    fz_render(f, b, 3, o, USER);
    fz_render(f, c, 1, o, NULL);
    fz_render(f, d, 3, o, USER);
    fz_render(f, e, 3, o, NULL);
}

/* The options from bits of the first byte: harness/prompt.c's (generation
 * prompt, no BOS) and `kvbench chat`'s (the source's bos/eos, a date,
 * --no-thinking). */
static ds_chat_opts fz_opts(unsigned bits, const char *jinja) {
    ds_chat_opts o = ds_chat_default_opts();
    o.add_generation_prompt = bits & 1;
    if (bits & 2) o.bos = "";
    if (bits & 4) o.enable_thinking = 0;
    if (bits & 8) o.date = "2025-02-29";
    if (bits & 16) o.eos = "</s>";
    o.jinja = jinja;
    return o;
}

static void fz_template(const char *jinja, unsigned bits) {
    const ds_chat_family *f = NULL, *g = NULL;
    int rc = ds_chat_detect(jinja, &f);
    if (rc ? f != NULL : f == NULL) abort();
    /* "auto" is detection; "none" is no family; a family's own name is it */
    if (ds_chat_resolve("auto", jinja, &g) != rc || g != f) abort();
    if (ds_chat_resolve("none", jinja, &g) || g) abort();
    if (!f) return;
    if (ds_chat_resolve(ds_chat_name(f), jinja, &g) || g != f || ds_chat_find(ds_chat_name(f)) != f) abort();
    ds_chat_opts o = fz_opts(bits, jinja);
    fz_conversations(f, &o);
}

/* What cJSON says the file's chat_template is, as ds_chat_source_config
 * must have read it: a string, or a list's entry named "default". */
static void fz_check_source(const char *text, const ds_chat_source *s) {
    cJSON *c = cJSON_Parse(text);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(c, "chat_template"), *e;
    if (cJSON_IsArray(t)) {
        const cJSON *pick = NULL;
        cJSON_ArrayForEach(e, t) {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");
            if (cJSON_IsString(n) && !strcmp(n->valuestring, "default")) pick = cJSON_GetObjectItemCaseSensitive(e, "template");
        }
        t = pick;
    }
    if (cJSON_IsString(t) ? !s->jinja || strcmp(s->jinja, t->valuestring) : s->jinja != NULL) abort();
    cJSON_Delete(c);
}

/* raw: the input's bytes, NULs included, as the file; text: up to the first NUL,
 * which is what a JSON parser of C strings reads of it. */
static void fz_config(const uint8_t *raw, size_t n, const char *text, unsigned bits) {
    char p[4300];
    fz_path(p, sizeof p, "tokenizer_config.json");
    if (fz_write(p, raw, n)) return;
    ds_chat_source s;
    int rc = ds_chat_source_config(p, &s);
    unlink(p);
    if (rc) {
        if (s.jinja || s.bos || s.eos || !strstr(kv_last_error(), p)) abort();
        return;
    }
    fz_check_source(text, &s);
    const ds_chat_family *f = NULL;
    if (ds_chat_resolve("auto", s.jinja, &f) == 0 && f) {
        ds_chat_opts o = fz_opts(bits, s.jinja);
        o.bos = s.bos;
        o.eos = s.eos;
        fz_conversations(f, &o);
    }
    ds_chat_source_free(&s);
    if (s.jinja || s.bos || s.eos) abort();
}

/* A template text Mistral v7 Tekken takes its default system message from. */
static const char V7_JINJA[] = "{%- set default_system_message = \"Hi \\u00e9 \" + today + '.\\n' %}";

static void fz_message(const char *text, unsigned bits) {
    ds_chat_opts o = fz_opts(bits, V7_JINJA);
    const ds_chat_msg u[] = {{"user", text}};
    const ds_chat_msg su[] = {{"system", text}, {"user", text}};
    const ds_chat_msg sua[] = {{"system", "s"}, {"user", text}, {"assistant", text}};
    for (int i = 0; i < ds_chat_count(); i++) {
        const ds_chat_family *f = ds_chat_at(i);
        if (!f || ds_chat_find(ds_chat_name(f)) != f) abort();
        fz_render(f, u, 1, &o, text);
        fz_render(f, su, 2, &o, text);
        fz_render(f, sua, 3, &o, NULL);
    }
    if (ds_chat_at(-1) || ds_chat_at(ds_chat_count())) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    /* the APIs take C strings: the rest up to its first NUL */
    char *text = malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    const unsigned mode = data[0] % 3, bits = data[0] / 3u;
    fz_quiet();
    if (mode == 0) fz_template(text, bits);
    else if (mode == 1) fz_config(data + 1, size - 1, text, bits);
    else fz_message(text, bits);
    fz_unquiet();
    free(text);
    return 0;
}
