/* test_chat.c - chat templates: every family's rendering of the real
 * templates against what Hugging Face's Jinja renders (tests/chat/STEM-CONV-gp.txt,
 * written by tests/chat/render_fixtures.mjs), refusals where the template
 * raises (.err files), detection, the names, and the end-of-generation tokens. */
#include "test_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "../base/kv_error.h"
#include "../datasets/chat.h"
#include "../engine/gguf.h"
#include "../engine/tokenizer.h"
#include "../harness/chat_gguf.h"

static const char *fixtures; /* argv[1]: tests/chat */

static cJSON *read_json(const char *path) {
    char *text = tu_read(path, NULL);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    return j;
}

/* A template entry of the manifest: its text (NULL for the ones not
 * stored here), bos and eos. */
typedef struct entry {
    char *text;
    char *stub; /* for an entry not stored here, what opts.jinja needs of it, or NULL */
    const char *bos, *eos;
    ds_chat_source src; /* owns text, bos and eos when read from a model's files */
} entry;

/* The real Mistral v7 Tekken template is not stored here; its default
 * system message is in the rendering of the conversation without one.
 * Returns `{%- set default_system_message = "..." + today + "..." %}` for
 * it (Jinja escapes, the 2024-07-26 of the rendering as `today`), which is
 * all of the template that kvbench reads. */
static char *tekken_stub(const char *stem) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-user-nogp.txt", fixtures, stem);
    char *r = tu_read(path, NULL);
    assert_non_null(r);
    char *b = strstr(r, "[SYSTEM_PROMPT]"), *e = strstr(r, "[/SYSTEM_PROMPT]"), *d = strstr(r, "2024-07-26");
    assert_true(b && e && d && b < d && d < e);
    b += strlen("[SYSTEM_PROMPT]");
    char *out = malloc(2 * (size_t)(e - b) + 128);
    size_t k = (size_t)sprintf(out, "{%%- set default_system_message = \"");
    for (char *c = b; c < e; c++) {
        if (c == d) {
            k += (size_t)sprintf(out + k, "\" + today + \"");
            c += 9;
        } else if (*c == '\n' || *c == '"' || *c == '\\') {
            out[k++] = '\\';
            out[k++] = *c == '\n' ? 'n' : *c;
        } else {
            out[k++] = *c;
        }
    }
    strcpy(out + k, "\" %}\n");
    free(r);
    return out;
}

/* 0, or 1 when the shared file is missing (the entry is skipped). */
static int load_entry(const cJSON *t, entry *e) {
    char buf[4096];
    memset(e, 0, sizeof *e);
    const char *file = cJSON_GetStringValue(cJSON_GetObjectItem(t, "file"));
    const char *config = cJSON_GetStringValue(cJSON_GetObjectItem(t, "config"));
    const char *gguf = cJSON_GetStringValue(cJSON_GetObjectItem(t, "gguf"));
    e->bos = cJSON_GetStringValue(cJSON_GetObjectItem(t, "bos"));
    e->eos = cJSON_GetStringValue(cJSON_GetObjectItem(t, "eos"));
    const char *family = cJSON_GetStringValue(cJSON_GetObjectItem(t, "family"));
    if (cJSON_GetObjectItem(t, "extra") && !strcmp(family, "mistral-v7-tekken"))
        e->stub = tekken_stub(cJSON_GetStringValue(cJSON_GetObjectItem(t, "stem")));
    if (file) return !(e->text = e->src.jinja = tu_read(tu_model_path(file, buf, sizeof buf), NULL));
    if (!config && !gguf) return 0;
    const char *p = tu_model_path(config ? config : gguf, buf, sizeof buf);
    if (!p) return 1;
    assert_int_equal(config ? ds_chat_source_config(p, &e->src) : hx_chat_source_gguf(p, &e->src), 0);
    assert_non_null(e->src.jinja);
    e->text = e->src.jinja;
    if (config) { /* the config's own special tokens */
        e->bos = e->src.bos;
        e->eos = e->src.eos;
    } else { /* the GGUF's token texts are the manifest's */
        assert_string_equal(e->src.bos, e->bos);
        assert_string_equal(e->src.eos, e->eos);
    }
    return 0;
}

/* Renders one conversation and compares with STEM-CONV-gp|nogp.txt, or
 * checks the refusal against .err. Returns 1 when it matches. */
static int check_case(const ds_chat_family *f, const cJSON *t, const entry *e, const char *conv,
                      const cJSON *msgs, int gp) {
    char path[4096];
    ds_chat_msg m[16];
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, msgs) {
        m[n].role = cJSON_GetStringValue(cJSON_GetObjectItem(it, "role"));
        m[n].content = cJSON_GetStringValue(cJSON_GetObjectItem(it, "content"));
        n++;
    }
    ds_chat_opts o = ds_chat_default_opts();
    o.add_generation_prompt = gp;
    o.bos = e->bos;
    o.eos = e->eos;
    o.date = cJSON_GetStringValue(cJSON_GetObjectItem(t, "date"));
    o.jinja = e->text ? e->text : e->stub;
    const cJSON *think = cJSON_GetObjectItem(t, "enable_thinking");
    if (think) o.enable_thinking = cJSON_IsTrue(think);
    const char *stem = cJSON_GetStringValue(cJSON_GetObjectItem(t, "stem"));
    snprintf(path, sizeof path, "%s/%s-%s-%s.txt", fixtures, stem, conv, gp ? "gp" : "nogp");
    size_t want_len, len = 0;
    char *want = tu_read(path, &want_len), *got = NULL;
    int rc = ds_chat_render(f, m, n, &o, &got, &len), ok;
    if (want) {
        ok = rc == 0 && len == want_len && memcmp(got, want, len) == 0;
        if (!ok) {
            size_t k = 0;
            while (rc == 0 && k < len && k < want_len && got[k] == want[k]) k++;
            fprintf(stderr, "MISMATCH %s at byte %zu: %s\n--- got\n%s\n--- want\n%s\n", path, k,
                    rc ? kv_last_error() : "", got ? got : "", want);
        }
    } else {
        snprintf(path + strlen(path) - 4, 5, ".err");
        want = tu_read(path, NULL);
        assert_non_null(want);
        ok = rc == KV_EINVAL && strstr(kv_last_error(), want) != NULL;
        if (!ok) fprintf(stderr, "NOT REFUSED %s: rc %d, %s\n", path, rc, rc ? kv_last_error() : got);
    }
    free(got);
    free(want);
    return ok;
}

static void test_fixtures(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", fixtures);
    cJSON *man = read_json(path);
    assert_non_null(man);
    const cJSON *convs = cJSON_GetObjectItem(man, "conversations"), *t;
    int total = 0, pass = 0, skipped = 0, detected = 0, detectable = 0;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(man, "templates")) {
        entry e;
        if (load_entry(t, &e)) {
            skipped++;
            continue;
        }
        const char *family = cJSON_GetStringValue(cJSON_GetObjectItem(t, "family"));
        const ds_chat_family *f = ds_chat_find(family);
        assert_non_null(f);
        if (e.text) { /* a real template: recognised as its family */
            const ds_chat_family *d = NULL;
            detectable++;
            if (ds_chat_detect(e.text, &d) == 0 && d == f) detected++;
            else fprintf(stderr, "DETECT %s: got %s, want %s\n", cJSON_GetStringValue(cJSON_GetObjectItem(t, "stem")),
                         d ? ds_chat_name(d) : kv_last_error(), family);
        }
        const cJSON *conv;
        cJSON_ArrayForEach(conv, convs) {
            for (int gp = 0; gp < 2; gp++) {
                total++;
                pass += check_case(f, t, &e, conv->string, conv, gp);
            }
        }
        ds_chat_source_free(&e.src);
        free(e.stub);
    }
    printf("chat fixtures: %d/%d renderings match Hugging Face Jinja; %d/%d real templates recognised; "
           "%d templates skipped (shared file missing)\n", pass, total, detected, detectable, skipped);
    cJSON_Delete(man);
    assert_int_equal(skipped, 0);
    assert_true(total >= 200);
    assert_int_equal(pass, total);
    assert_int_equal(detected, detectable);
}

static void test_unknown_template(void **state) {
    (void)state;
    const ds_chat_family *f = (const ds_chat_family *)1;
    assert_int_equal(ds_chat_detect("{% for m in messages %}{{ m.content }}{% endfor %}", &f), KV_ENOTFOUND);
    assert_non_null(strstr(kv_last_error(), "chat = NAME"));
    assert_non_null(strstr(kv_last_error(), "llama3.1"));
    assert_non_null(strstr(kv_last_error(), "mistral-v3-tekken"));
}

/* The families whose real templates are not stored here are recognised by
 * their templates' distinctive parts. */
static void test_detect_snippets(void **state) {
    (void)state;
    static const char *const cases[][2] = {
        {"{{ bos_token + '[INST] ' + content.strip() }}<<SYS>>", "llama2"},
        {"{{- ' [INST] ' + system_message + '\\n\\n' }}", "mistral-v1"},
        {"[AVAILABLE_TOOLS] [ {{- \"[INST] \" + message[\"content\"] }}", "mistral-v3"},
        {"{{ '[SYSTEM_PROMPT] ' + message['content'] }}{{ '[INST] ' }}", "mistral-v7"},
        {"{{'<|im_start|>' + message['role'] }}", "chatml"},
        {"{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{{ '<|assistant|>\n' }}", "phi3.5"},
        {"{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' }}", "phi3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const ds_chat_family *f = NULL;
        assert_int_equal(ds_chat_detect(cases[i][0], &f), 0);
        assert_string_equal(ds_chat_name(f), cases[i][1]);
    }
}

static void test_resolve(void **state) {
    (void)state;
    const ds_chat_family *f = (const ds_chat_family *)1;
    assert_int_equal(ds_chat_resolve("none", "<|im_start|>", &f), 0);
    assert_null(f);
    assert_int_equal(ds_chat_resolve("auto", NULL, &f), KV_EINVAL);
    assert_int_equal(ds_chat_resolve("auto", "<start_of_turn> first_user_prefix", &f), 0);
    assert_string_equal(ds_chat_name(f), "gemma3");
    assert_int_equal(ds_chat_resolve("llama3.1@1", NULL, &f), 0);
    assert_int_equal(ds_chat_version(f), 1);
    assert_null(ds_chat_find("llama3.1@2"));
    assert_int_equal(ds_chat_resolve("llama4", NULL, &f), KV_ENOTFOUND);
    assert_non_null(strstr(kv_last_error(), "auto, none, qwen3"));
    for (int i = 0; i < ds_chat_count(); i++) assert_ptr_equal(ds_chat_find(ds_chat_name(ds_chat_at(i))), ds_chat_at(i));
}

/* Mistral v7 Tekken takes its default system message from the template's
 * text: the date is `date`, Jinja's escapes are read as Hugging Face's
 * Jinja reads them, and what that refuses (llama.cpp's copy of the
 * template writes its newlines as a backslash before a line break) or a
 * missing template is refused with words naming the cause. */
static void test_tekken_default(void **state) {
    (void)state;
    const ds_chat_family *f = ds_chat_find("mistral-v7-tekken");
    ds_chat_msg user[] = {{"user", "hi"}}, sys[] = {{"system", "S"}, {"user", "hi"}, {"system", "again"}};
    ds_chat_opts o = ds_chat_default_opts();
    char *out = NULL;
    size_t len;
    assert_int_equal(ds_chat_render(f, user, 1, &o, &out, &len), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "default_system_message"));
    o.jinja = "{%- set today = strftime_now(\"%Y-%m-%d\") %}\n{%- set default_system_message = \"A\\n\\\"q\\\" \\u00e9\\x41 \" "
              "+ today + '.\\'' %}";
    o.date = "2025-01-02";
    assert_int_equal(ds_chat_render(f, user, 1, &o, &out, &len), 0);
    assert_string_equal(out, "<s>[SYSTEM_PROMPT]A\n\"q\" \xc3\xa9" "A 2025-01-02.'[/SYSTEM_PROMPT][INST]hi[/INST]");
    free(out);
    out = NULL;
    o.jinja = "{%- set default_system_message = \"Paris.\\\nYour\" %}";
    assert_int_equal(ds_chat_render(f, user, 1, &o, &out, &len), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "unexpected escaped character"));
    o.jinja = "{%- set default_system_message = \"before\\x00after\" %}"; /* would cut the prompt */
    assert_int_equal(ds_chat_render(f, user, 1, &o, &out, &len), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "NUL character"));
    o.jinja = "{%- set default_system_message = \"a\\ud800b\" %}"; /* no UTF-8 form */
    assert_int_equal(ds_chat_render(f, user, 1, &o, &out, &len), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "surrogate"));
    assert_int_equal(ds_chat_render(f, sys, 3, &o, &out, &len), KV_EINVAL); /* a second system message */
    assert_non_null(strstr(kv_last_error(), "Only user and assistant roles are supported"));
    assert_null(out);
}

static void test_bad_input(void **state) {
    (void)state;
    const ds_chat_family *f = ds_chat_find("chatml");
    ds_chat_msg tool[] = {{"tool", "42"}};
    char *out = NULL;
    size_t len;
    assert_int_equal(ds_chat_render(f, tool, 1, NULL, &out, &len), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "role 'tool'"));
    assert_int_equal(ds_chat_render(f, tool, 0, NULL, &out, &len), KV_EINVAL);
    ds_chat_msg user[] = {{"user", "hi"}};
    ds_chat_opts o = ds_chat_default_opts();
    o.date = "26 Jul 2024";
    assert_int_equal(ds_chat_render(ds_chat_find("llama3.1"), user, 1, &o, &out, &len), KV_EINVAL);
    assert_non_null(strstr(kv_last_error(), "YYYY-MM-DD"));
    assert_null(out);
}

/* Jinja's trim is Python's str.strip(): Unicode spaces go too. */
static void test_trim_unicode(void **state) {
    (void)state;
    ds_chat_msg m[] = {{"user", "\xe3\x80\x80\t hi \xe2\x80\x83x\xc2\xa0\n\x1f"}};
    ds_chat_opts o = ds_chat_default_opts();
    o.bos = "";
    char *out;
    size_t len;
    assert_int_equal(ds_chat_render(ds_chat_find("gemma2"), m, 1, &o, &out, &len), 0);
    assert_string_equal(out, "<start_of_turn>user\nhi \xe2\x80\x83x<end_of_turn>\n");
    free(out);
}

static int has(const int32_t *ids, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

static void test_end_tokens(void **state) {
    (void)state;
    char buf[4096];
    const char *phi = tu_model_path("tokenizers/gguf-vocab/ggml-vocab-phi-3.gguf", buf, sizeof buf);
    if (!phi) skip();
    kv_gguf *g;
    kv_tokenizer *t;
    assert_int_equal(kv_gguf_open(phi, &g), 0);
    assert_int_equal(kv_tokenizer_from_gguf(g, &t), 0);
    int32_t ids[16];
    int n = kv_tokenizer_end_tokens(t, ids, 16);
    int32_t eos = kv_tokenizer_eos(t), end = kv_tokenizer_find(t, "<|end|>");
    int32_t eot = kv_tokenizer_find(t, "<|endoftext|>");
    printf("phi-3 end tokens (%d):", n);
    for (int i = 0; i < n && i < 16; i++) printf(" %d", ids[i]);
    printf("\n");
    assert_true(end >= 0 && eot >= 0);
    assert_true(has(ids, n, eos) && has(ids, n, end) && has(ids, n, eot));
    assert_int_equal(ids[0], eos); /* EOS first */
    for (int i = 0; i < n; i++)
        for (int k = 0; k < i; k++) assert_int_not_equal(ids[i], ids[k]);
    /* A short buffer gets the first ids; the count is still the whole set. */
    assert_int_equal(kv_tokenizer_end_tokens(t, ids, 1), n);
    assert_int_equal(ids[0], eos);
    kv_tokenizer_free(t);
    kv_gguf_close(g);

    /* GPT-2: <|endoftext|> is EOS itself, so the set is that one token. */
    assert_non_null(tu_model_path("tokenizers/gguf-vocab/ggml-vocab-gpt-2.gguf", buf, sizeof buf));
    assert_int_equal(kv_gguf_open(buf, &g), 0);
    assert_int_equal(kv_tokenizer_from_gguf(g, &t), 0);
    assert_int_equal(kv_tokenizer_end_tokens(t, ids, 16), 1);
    assert_int_equal(ids[0], 50256);
    kv_tokenizer_free(t);
    kv_gguf_close(g);
}

/* The GGUF's end-of-turn and end-of-message ids join EOS, and the end
 * texts the vocabulary holds come after them, each id once. */
static void test_end_tokens_gguf_keys(void **state) {
    (void)state;
    static const char *const tokens[] = {"<unk>", "<s>", "</s>", "a", "<|im_end|>", "<stop>", "<|eom_id|>", "<|end|>x"};
    size_t lens[8];
    for (int i = 0; i < 8; i++) lens[i] = strlen(tokens[i]);
    char path[] = "/tmp/kvbench-test-chat-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    kv_gguf_writer *w = kv_gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(kv_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"), 0);
    assert_int_equal(kv_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, lens, 8), 0);
    assert_int_equal(kv_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2), 0);
    assert_int_equal(kv_gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", 5), 0);
    assert_int_equal(kv_gguf_writer_set_u32(w, "tokenizer.ggml.eom_token_id", 6), 0);
    assert_int_equal(kv_gguf_writer_write(w, path), 0);
    kv_gguf_writer_free(w);
    kv_gguf *g;
    kv_tokenizer *t;
    assert_int_equal(kv_gguf_open(path, &g), 0);
    assert_int_equal(kv_tokenizer_from_gguf(g, &t), 0);
    int32_t ids[16];
    assert_int_equal(kv_tokenizer_end_tokens(t, ids, 16), 4);
    assert_int_equal(ids[0], 2); /* EOS */
    assert_int_equal(ids[1], 5); /* eot_token_id */
    assert_int_equal(ids[2], 6); /* eom_token_id, also <|eom_id|>: once */
    assert_int_equal(ids[3], 4); /* <|im_end|>; "<|end|>x" is not <|end|> */
    kv_tokenizer_free(t);
    kv_gguf_close(g);
    unlink(path);
}

/* tokenizer_config.json's chat_template as a list of named templates:
 * the one named "default" (as transformers picks); without one, or with
 * a malformed entry, an error naming the file. */
static void test_config_template_list(void **state) {
    (void)state;
    char dir[256], p[512];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    const char *cases[3] = {
        "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, "
        "{\"name\": \"default\", \"template\": \"D\"}], \"eos_token\": \"</s>\"}",
        "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}]}",
        "{\"chat_template\": [{\"name\": \"default\"}]}"};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fputs(cases[i], f);
        fclose(f);
        ds_chat_source src;
        int rc = ds_chat_source_config(p, &src);
        if (i == 0) {
            assert_int_equal(rc, 0);
            assert_string_equal(src.jinja, "D");
            assert_string_equal(src.eos, "</s>");
            ds_chat_source_free(&src);
        } else {
            assert_int_equal(rc, KV_EFORMAT);
            assert_non_null(strstr(kv_last_error(), p));
        }
    }
    assert_non_null(strstr(kv_last_error(), "list of {name, template}"));
    tu_rmdir(dir);
}

int main(int argc, char **argv) {
    fixtures = argc > 1 ? argv[1] : "tests/chat";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),       cmocka_unit_test(test_unknown_template),
        cmocka_unit_test(test_detect_snippets), cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_bad_input),      cmocka_unit_test(test_tekken_default),
        cmocka_unit_test(test_trim_unicode),
        cmocka_unit_test(test_end_tokens),     cmocka_unit_test(test_end_tokens_gguf_keys),
        cmocka_unit_test(test_config_template_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
