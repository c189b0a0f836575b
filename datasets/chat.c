/* chat.c - chat template families: detection and rendering.
 *
 * Each family is a row of FAMILIES: a name, a version, the substrings that
 * recognise its templates, its usual BOS/EOS texts and a renderer. Each
 * renderer follows one real template's Jinja statement by statement (the
 * template is named above it), including where it trims, where it raises,
 * and in which order it checks. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../base/file.h"
#include "../base/kv_error.h"
#include "chat.h"
#include "internal.h"

/* What a renderer gets: the messages and the options with bos, eos and
 * date resolved. */
typedef struct chat_call {
    const ds_chat_family *f;
    const ds_chat_msg *m;
    int n;
    int gp;               /* add_generation_prompt */
    const char *bos, *eos;
    char date[16];        /* "26 Jul 2024" */
    int thinking;         /* enable_thinking: -1, 0, 1 */
    const char *iso;      /* the date as YYYY-MM-DD (strftime_now("%Y-%m-%d")) */
    const char *jinja;    /* the template's text, or NULL */
} chat_call;

typedef int (*chat_render_fn)(const chat_call *c, ds_str *o);

struct ds_chat_family {
    const char *name;
    int version;
    const char *models;
    const char *bos, *eos;
    const char *detect[4]; /* all must occur; NULL-terminated */
    chat_render_fn render;
};

/* ------------------------------------------------------------- helpers */

static int add(ds_str *o, const char *s) { return ds_str_adds(o, s) ? KV_ENOMEM : 0; }

static int addn(ds_str *o, const char *s, size_t n) { return ds_str_add(o, s, n) ? KV_ENOMEM : 0; }

/* Adds each string of a NULL-terminated list. */
static int addv(ds_str *o, const char *const *parts) {
    for (; *parts; parts++)
        if (add(o, *parts)) return KV_ENOMEM;
    return 0;
}
#define ADD(o, ...) addv((o), (const char *const[]){__VA_ARGS__, NULL})

/* Length of the whitespace character at s (of n bytes) as Python's
 * str.strip() counts whitespace (what Jinja's trim and .strip() call), or 0.
 * ASCII, the \x1c-\x1f separators, and the Unicode spaces in UTF-8. */
static size_t space_at(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    if (s[0] == ' ' || (s[0] >= '\t' && s[0] <= '\r') || (s[0] >= 0x1c && s[0] <= 0x1f)) return 1;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n < 3) return 0;
    unsigned cp = ((unsigned)(s[0] & 0x0F) << 12) | ((unsigned)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    if ((s[0] & 0xF0) != 0xE0 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
    int sp = cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
             cp == 0x205F || cp == 0x3000;
    return sp ? 3 : 0;
}

/* The bounds of s with Python-whitespace stripped from both ends. */
static void strip_bounds(const char *s, size_t *b, size_t *e) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, k;
    while ((k = space_at(u + i, n - i)) > 0) i += k;
    /* From the end: try the 1, 2 and 3 byte forms ending at n. */
    while (n > i) {
        if (space_at(u + n - 1, 1)) n -= 1;
        else if (n - i >= 2 && space_at(u + n - 2, 2) == 2) n -= 2;
        else if (n - i >= 3 && space_at(u + n - 3, 3) == 3) n -= 3;
        else break;
    }
    *b = i;
    *e = n;
}

/* Adds s stripped as Jinja's `| trim` / `.strip()` strip it. */
static int add_trim(ds_str *o, const char *s) {
    size_t b, e;
    strip_bounds(s, &b, &e);
    return addn(o, s + b, e - b);
}

/* Adds s[0..n) without the newlines at its start (lead) and end (tail):
 * Python's .lstrip('\n'), .rstrip('\n'), .strip('\n'). */
static int add_nl_strip(ds_str *o, const char *s, size_t n, int lead, int tail) {
    while (lead && n > 0 && *s == '\n') s++, n--;
    while (tail && n > 0 && s[n - 1] == '\n') n--;
    return addn(o, s, n);
}

static int is_role(const ds_chat_msg *m, const char *role) { return strcmp(m->role, role) == 0; }

/* The last occurrence of needle in s, or NULL. */
static const char *last_of(const char *s, const char *needle) {
    const char *hit = NULL;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) hit = p;
    return hit;
}

/* A raise_exception of the real template: KV_EINVAL with its words. */
static int refuse(const chat_call *c, int i, const char *words) {
    return kv_errorf(KV_EINVAL, "chat template %s@%d refuses message %d (%s): %s", c->f->name, c->f->version, i,
                     i >= 0 && i < c->n ? c->m[i].role : "-", words);
}

static const char ALTERNATE[] = "Conversation roles must alternate user/assistant/user/assistant/...";
static const char ALTERNATE_AFTER_SYS[] =
    "After the optional system message, conversation roles must alternate user/assistant/user/assistant/...";
static const char ONLY_USER_ASSISTANT[] =
    "Only user and assistant roles are supported, with the exception of an initial optional system message!";

/* The Jinja test `(message['role'] == 'user') != (index % 2 == 0)`. */
static int out_of_turn(const ds_chat_msg *m, int index) { return is_role(m, "user") != (index % 2 == 0); }

/* ------------------------------------------------------------- ChatML */

/* OpenHermes-2.5's ChatML (and any plain <|im_start|> template): every
 * message as is. */
static int r_chatml(const chat_call *c, ds_str *o) {
    for (int i = 0; i < c->n; i++)
        if (ADD(o, "<|im_start|>", c->m[i].role, "\n", c->m[i].content, "<|im_end|>\n")) return KV_ENOMEM;
    return c->gp ? add(o, "<|im_start|>assistant\n") : 0;
}

/* Qwen2.5-Instruct: the first system message, or Qwen's own; later system
 * messages are turns of their own. */
static int r_qwen25(const chat_call *c, ds_str *o) {
    int sys = is_role(&c->m[0], "system");
    if (sys ? ADD(o, "<|im_start|>system\n", c->m[0].content, "<|im_end|>\n")
            : add(o, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                     "assistant.<|im_end|>\n"))
        return KV_ENOMEM;
    for (int i = sys; i < c->n; i++)
        if (ADD(o, "<|im_start|>", c->m[i].role, "\n", c->m[i].content, "<|im_end|>\n")) return KV_ENOMEM;
    return c->gp ? add(o, "<|im_start|>assistant\n") : 0;
}

/* A Qwen3 user message that is a tool's answer does not count as the
 * last query. */
static int is_tool_response(const char *s) {
    size_t n = strlen(s), t = strlen("</tool_response>");
    return strncmp(s, "<tool_response>", strlen("<tool_response>")) == 0 && n >= t &&
           strcmp(s + n - t, "</tool_response>") == 0;
}

/* A Qwen3 assistant turn: its reasoning (between <think> and </think>)
 * shown only after the last user query, where the last turn always shows
 * a (maybe empty) <think> block. */
static int qwen3_assistant(const chat_call *c, int i, int last_query, ds_str *o) {
    const char *s = c->m[i].content, *end = strstr(s, "</think>");
    const char *content = s, *reason = "";
    size_t reason_n = 0;
    if (end) {
        content = last_of(s, "</think>") + strlen("</think>");
        while (*content == '\n') content++;
        size_t before = (size_t)(end - s);
        while (before > 0 && s[before - 1] == '\n') before--;
        reason = s;
        for (const char *p = s; (p = strstr(p, "<think>")) && p < s + before; p++) reason = p + strlen("<think>");
        reason_n = before > (size_t)(reason - s) ? before - (size_t)(reason - s) : 0;
        while (reason_n > 0 && *reason == '\n') reason++, reason_n--;
    }
    if (i > last_query && (i == c->n - 1 || reason_n > 0)) {
        if (add(o, "<|im_start|>assistant\n<think>\n") || add_nl_strip(o, reason, reason_n, 1, 1) ||
            add(o, "\n</think>\n\n") || add_nl_strip(o, content, strlen(content), 1, 0))
            return KV_ENOMEM;
    } else if (ADD(o, "<|im_start|>assistant\n", content)) {
        return KV_ENOMEM;
    }
    return add(o, "<|im_end|>\n");
}

/* Qwen3: ChatML without a default system message, with thinking. */
static int r_qwen3(const chat_call *c, ds_str *o) {
    int sys = is_role(&c->m[0], "system");
    if (sys && ADD(o, "<|im_start|>system\n", c->m[0].content, "<|im_end|>\n")) return KV_ENOMEM;
    int last_query = c->n - 1;
    for (int i = c->n - 1; i >= 0; i--)
        if (is_role(&c->m[i], "user") && !is_tool_response(c->m[i].content)) {
            last_query = i;
            break;
        }
    for (int i = 0; i < c->n; i++) {
        int rc = 0;
        if (is_role(&c->m[i], "assistant")) rc = qwen3_assistant(c, i, last_query, o);
        else if (i > 0 || !sys) rc = ADD(o, "<|im_start|>", c->m[i].role, "\n", c->m[i].content, "<|im_end|>\n");
        if (rc) return rc;
    }
    if (c->gp && add(o, "<|im_start|>assistant\n")) return KV_ENOMEM;
    return c->gp && c->thinking == 0 ? add(o, "<think>\n\n</think>\n\n") : 0;
}

/* ------------------------------------------------------------- DeepSeek */

/* DeepSeek-R1 distills (Llama-8B, Qwen-32B): the last system message after
 * BOS, then the turns; an assistant turn keeps only what follows its last
 * </think>. */
static int r_deepseek_r1(const chat_call *c, ds_str *o) {
    const char *sys = "";
    for (int i = 0; i < c->n; i++)
        if (is_role(&c->m[i], "system")) sys = c->m[i].content;
    if (ADD(o, c->bos, sys)) return KV_ENOMEM;
    for (int i = 0; i < c->n; i++) {
        const char *s = c->m[i].content;
        if (is_role(&c->m[i], "user") && ADD(o, "<｜User｜>", s)) return KV_ENOMEM;
        if (!is_role(&c->m[i], "assistant")) continue;
        const char *cut = last_of(s, "</think>");
        if (ADD(o, "<｜Assistant｜>", cut ? cut + strlen("</think>") : s, "<｜end▁of▁sentence｜>"))
            return KV_ENOMEM;
    }
    return c->gp ? add(o, "<｜Assistant｜><think>\n") : 0;
}

/* ------------------------------------------------------------- Llama */

/* One Llama 3 turn: header, trimmed content, <|eot_id|>. */
static int llama3_turn(ds_str *o, const char *role, const char *content) {
    if (ADD(o, "<|start_header_id|>", role, "<|end_header_id|>\n\n") || add_trim(o, content)) return KV_ENOMEM;
    return add(o, "<|eot_id|>");
}

/* Llama 3 Instruct (the 3.0 template): BOS before the first turn. */
static int r_llama3(const chat_call *c, ds_str *o) {
    if (add(o, c->bos)) return KV_ENOMEM;
    for (int i = 0; i < c->n; i++)
        if (llama3_turn(o, c->m[i].role, c->m[i].content)) return KV_ENOMEM;
    return c->gp ? add(o, "<|start_header_id|>assistant<|end_header_id|>\n\n") : 0;
}

/* Llama 3.1 / 3.2 / 3.3 Instruct without tools: a system turn always,
 * with the knowledge cut-off and the date before the (trimmed) system
 * message. */
static int r_llama31(const chat_call *c, ds_str *o) {
    int sys = is_role(&c->m[0], "system");
    if (ADD(o, c->bos, "<|start_header_id|>system<|end_header_id|>\n\n", "Cutting Knowledge Date: December 2023\n",
            "Today Date: ", c->date, "\n\n"))
        return KV_ENOMEM;
    if ((sys && add_trim(o, c->m[0].content)) || add(o, "<|eot_id|>")) return KV_ENOMEM;
    for (int i = sys; i < c->n; i++)
        if (llama3_turn(o, c->m[i].role, c->m[i].content)) return KV_ENOMEM;
    return c->gp ? add(o, "<|start_header_id|>assistant<|end_header_id|>\n\n") : 0;
}

/* Llama 2 chat (meta-llama/Llama-2-*-chat-hf): BOS + [INST] per user turn,
 * the system message in <<SYS>> inside the first; contents stripped; no
 * generation prompt (the template has none). */
static int r_llama2(const chat_call *c, ds_str *o) {
    int sys = is_role(&c->m[0], "system");
    for (int i = sys; i < c->n; i++) {
        int k = i - sys;
        if (out_of_turn(&c->m[i], k)) return refuse(c, i, ALTERNATE);
        ds_str t = {0};
        int rc = k == 0 && sys ? ADD(&t, "<<SYS>>\n", c->m[0].content, "\n<</SYS>>\n\n", c->m[i].content)
                               : add(&t, c->m[i].content);
        if (!rc && is_role(&c->m[i], "user"))
            rc = ADD(o, c->bos, "[INST] ") || add_trim(o, t.p) || add(o, " [/INST]") ? KV_ENOMEM : 0;
        else if (!rc && is_role(&c->m[i], "assistant"))
            rc = add(o, " ") || add_trim(o, t.p) || ADD(o, " ", c->eos) ? KV_ENOMEM : 0;
        free(t.p);
        if (rc) return rc;
    }
    return 0;
}

/* ------------------------------------------------------------- Mistral */

/* Mistral's v1 template (Mistral-7B-Instruct-v0.2 as mistralai revised it):
 * " [INST] ", the system message before the first user message; checks
 * each message as it goes. */
static int r_mistral_v1(const chat_call *c, ds_str *o) {
    int sys = is_role(&c->m[0], "system");
    if (add(o, c->bos)) return KV_ENOMEM;
    for (int i = sys; i < c->n; i++) {
        const ds_chat_msg *m = &c->m[i];
        int rc;
        if (out_of_turn(m, i - sys)) return refuse(c, i, ALTERNATE_AFTER_SYS);
        if (is_role(m, "user") && i == sys && sys)
            rc = ADD(o, " [INST] ", c->m[0].content, "\n\n", m->content, " [/INST]");
        else if (is_role(m, "user"))
            rc = ADD(o, " [INST] ", m->content, " [/INST]");
        else if (is_role(m, "assistant"))
            rc = ADD(o, " ", m->content, c->eos);
        else
            return refuse(c, i, ONLY_USER_ASSISTANT);
        if (rc) return rc;
    }
    return 0;
}

/* Mistral's v3 templates: alternation checked first, then "[INST]" turns
 * with the system message before the LAST user message (none when the
 * conversation ends with the assistant). v3 (Mistral-7B-v0.3,
 * Mistral-Large-2407) puts a space after [INST] and before a trimmed
 * answer; v3-tekken (Mistral-Nemo-2407) neither. */
static int mistral_v3(const chat_call *c, ds_str *o, int tekken) {
    int sys = is_role(&c->m[0], "system");
    for (int i = sys; i < c->n; i++)
        if (out_of_turn(&c->m[i], i - sys)) return refuse(c, i, ALTERNATE_AFTER_SYS);
    if (add(o, c->bos)) return KV_ENOMEM;
    const char *inst = tekken ? "[INST]" : "[INST] ";
    for (int i = sys; i < c->n; i++) {
        const ds_chat_msg *m = &c->m[i];
        int rc;
        if (is_role(m, "user") && i == c->n - 1 && sys)
            rc = ADD(o, inst, c->m[0].content, "\n\n", m->content, "[/INST]");
        else if (is_role(m, "user"))
            rc = ADD(o, inst, m->content, "[/INST]");
        else if (is_role(m, "assistant") && tekken)
            rc = ADD(o, m->content, c->eos);
        else if (is_role(m, "assistant"))
            rc = add(o, " ") || add_trim(o, m->content) || add(o, c->eos) ? KV_ENOMEM : 0;
        else
            return refuse(c, i, ONLY_USER_ASSISTANT);
        if (rc) return rc;
    }
    return 0;
}

static int r_mistral_v3(const chat_call *c, ds_str *o) { return mistral_v3(c, o, 0); }
static int r_mistral_v3_tekken(const chat_call *c, ds_str *o) { return mistral_v3(c, o, 1); }

/* Mistral's v7 template (Mistral-Large-Instruct-2411): system prompts in
 * [SYSTEM_PROMPT] wherever they are, no order checked. */
static int r_mistral_v7(const chat_call *c, ds_str *o) {
    if (add(o, c->bos)) return KV_ENOMEM;
    for (int i = 0; i < c->n; i++) {
        const ds_chat_msg *m = &c->m[i];
        int rc = is_role(m, "user")     ? ADD(o, "[INST] ", m->content, "[/INST]")
                 : is_role(m, "system") ? ADD(o, "[SYSTEM_PROMPT] ", m->content, "[/SYSTEM_PROMPT]")
                                        : ADD(o, " ", m->content, c->eos);
        if (rc) return rc;
    }
    return 0;
}

/* One escape of a Jinja string literal as Hugging Face's Jinja reads it
 * (\n \t \r \b \f \v \' \" \\, \xHH, \uHHHH); *p is past the backslash.
 * Anything else is the error its lexer raises ("Unexpected escaped
 * character": Python's line continuation, a backslash before a newline, is
 * one). */
static int jinja_escape(const char **p, ds_str *o) {
    static const char from[] = "ntrbfv'\"\\", to[] = "\n\t\r\b\f\v'\"\\";
    char e = **p;
    const char *k = e ? strchr(from, e) : NULL;
    (*p)++;
    if (k) return addn(o, &to[k - from], 1);
    int digits = e == 'x' ? 2 : e == 'u' ? 4 : 0;
    unsigned v = 0;
    for (int i = 0; i < digits; i++, (*p)++) {
        char c = **p;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return kv_errorf(KV_EINVAL, "chat template: invalid hexadecimal escape sequence \\%c", e);
        v = v * 16 + (unsigned)d;
    }
    if (!digits) return kv_errorf(KV_EINVAL, "chat template: unexpected escaped character after '\\' (0x%02x)", (unsigned char)e);
    /* A prompt is a C string and UTF-8: a NUL would cut it silently and a
     * lone surrogate has no UTF-8 form, so both are refused by name. */
    if (v == 0) return kv_errorf(KV_EINVAL, "chat template: the escape \\%c%0*x is a NUL character", e, digits, 0u);
    if (v >= 0xD800 && v <= 0xDFFF)
        return kv_errorf(KV_EINVAL, "chat template: the escape \\u%04X is a lone UTF-16 surrogate (no UTF-8 form)", v);
    char u[3] = {(char)v, 0, 0};
    size_t n = 1;
    if (v >= 0x800) u[0] = (char)(0xE0 | v >> 12), u[1] = (char)(0x80 | (v >> 6 & 63)), u[2] = (char)(0x80 | (v & 63)), n = 3;
    else if (v >= 0x80) u[0] = (char)(0xC0 | v >> 6), u[1] = (char)(0x80 | (v & 63)), n = 2;
    return addn(o, u, n);
}

/* The value of `{%- set NAME = "..." + today + "..." %}` in the template:
 * string literals and the variable `today` (c->iso) joined by '+'. */
static int jinja_set_string(const chat_call *c, const char *name, ds_str *o) {
    const char *p = c->jinja ? strstr(c->jinja, name) : NULL;
    if (!p) return kv_errorf(KV_EINVAL, "chat template %s: needs the template's text for its %s (a conversation "
                                        "without a system message)", c->f->name, name);
    for (p += strlen(name); *p == ' '; p++) {}
    if (*p++ != '=') return kv_errorf(KV_EINVAL, "chat template %s: expected '=' after %s", c->f->name, name);
    for (;;) {
        while (*p == ' ' || *p == '\n') p++;
        if (*p == '"' || *p == '\'') {
            char q = *p++;
            while (*p && *p != q) {
                const char *b = strchr(p, '\\'), *e = strchr(p, q);
                if (!e) break;
                if (!b || b > e) b = e;
                if (addn(o, p, (size_t)(b - p))) return KV_ENOMEM;
                p = b;
                int rc = *p == '\\' ? (p++, jinja_escape(&p, o)) : 0;
                if (rc) return rc;
            }
            if (*p++ != q) return kv_errorf(KV_EINVAL, "chat template %s: unterminated string in %s", c->f->name, name);
        } else if (!strncmp(p, "today", 5)) {
            if (add(o, c->iso)) return KV_ENOMEM;
            p += 5;
        } else {
            return kv_errorf(KV_EINVAL, "chat template %s: %s: expected a string or today at \"%.20s\"", c->f->name,
                             name, p);
        }
        while (*p == ' ' || *p == '\n') p++;
        if (*p == '%') return 0;
        if (*p++ != '+') return kv_errorf(KV_EINVAL, "chat template %s: %s: expected '+' or '%%}'", c->f->name, name);
    }
}

/* Mistral v7 Tekken (Mistral-Small-3.1-24B-Instruct-2503): a system
 * prompt always (the first message's, else the template's default system
 * message with today's date), "[INST]" turns with nothing around the
 * content, answers followed by EOS, a later system message refused; no
 * generation prompt. The template's alternation check never fires: it
 * builds its list of messages with `set` inside a for loop, which Jinja
 * scopes to the loop, so the list it checks is empty. */
static int r_mistral_v7_tekken(const chat_call *c, ds_str *o) {
    int sys = is_role(&c->m[0], "system");
    ds_str def = {0};
    int rc = sys ? 0 : jinja_set_string(c, "default_system_message", &def);
    if (!rc) rc = ADD(o, c->bos, "[SYSTEM_PROMPT]", sys ? c->m[0].content : def.p ? def.p : "", "[/SYSTEM_PROMPT]");
    free(def.p);
    for (int i = sys; i < c->n && !rc; i++) {
        const ds_chat_msg *m = &c->m[i];
        rc = is_role(m, "user")        ? ADD(o, "[INST]", m->content, "[/INST]")
             : is_role(m, "assistant") ? ADD(o, m->content, c->eos)
                                       : refuse(c, i, ONLY_USER_ASSISTANT);
    }
    return rc;
}

/* ------------------------------------------------------------- Gemma */

/* Gemma 2 (and Gemma 1 without the BOS): no system role; strict
 * alternation; "model" for the assistant; contents trimmed. */
static int r_gemma2(const chat_call *c, ds_str *o) {
    if (add(o, c->bos)) return KV_ENOMEM;
    if (is_role(&c->m[0], "system")) return refuse(c, 0, "System role not supported");
    for (int i = 0; i < c->n; i++) {
        const ds_chat_msg *m = &c->m[i];
        if (out_of_turn(m, i)) return refuse(c, i, ALTERNATE);
        const char *role = is_role(m, "assistant") ? "model" : m->role;
        if (ADD(o, "<start_of_turn>", role, "\n") || add_trim(o, m->content) || add(o, "<end_of_turn>\n"))
            return KV_ENOMEM;
    }
    return c->gp ? add(o, "<start_of_turn>model\n") : 0;
}

/* Gemma 3: a leading system message becomes the first turn's prefix
 * (untrimmed, then a blank line); the rest as Gemma 2. */
static int r_gemma3(const chat_call *c, ds_str *o) {
    int sys = is_role(&c->m[0], "system");
    if (add(o, c->bos)) return KV_ENOMEM;
    for (int i = sys; i < c->n; i++) {
        const ds_chat_msg *m = &c->m[i];
        if (out_of_turn(m, i - sys)) return refuse(c, i, ALTERNATE);
        const char *role = is_role(m, "assistant") ? "model" : m->role;
        if (ADD(o, "<start_of_turn>", role, "\n")) return KV_ENOMEM;
        if (i == sys && sys && ADD(o, c->m[0].content, "\n\n")) return KV_ENOMEM;
        if (add_trim(o, m->content) || add(o, "<end_of_turn>\n")) return KV_ENOMEM;
    }
    return c->gp ? add(o, "<start_of_turn>model\n") : 0;
}

/* ------------------------------------------------------------- Phi */

/* Phi-3-mini as first released (the template llama.cpp's phi-3 vocabulary
 * holds): BOS, each user turn followed by the assistant's header whether or
 * not one answers, system messages dropped, no generation prompt. */
static int r_phi3(const chat_call *c, ds_str *o) {
    if (add(o, c->bos)) return KV_ENOMEM;
    for (int i = 0; i < c->n; i++) {
        const ds_chat_msg *m = &c->m[i];
        int rc = is_role(m, "user")        ? ADD(o, "<|user|>\n", m->content, "<|end|>\n<|assistant|>\n")
                 : is_role(m, "assistant") ? ADD(o, m->content, "<|end|>\n")
                                           : 0;
        if (rc) return rc;
    }
    return 0;
}

/* Phi-3.5-mini (and Phi-3-mini's revised template): <|role|> turns, an
 * empty system message skipped; without the generation prompt, EOS. */
static int r_phi35(const chat_call *c, ds_str *o) {
    for (int i = 0; i < c->n; i++) {
        const ds_chat_msg *m = &c->m[i];
        if (is_role(m, "system") && !m->content[0]) continue;
        if (ADD(o, "<|", m->role, "|>\n", m->content, "<|end|>\n")) return KV_ENOMEM;
    }
    return add(o, c->gp ? "<|assistant|>\n" : c->eos);
}

/* ------------------------------------------------------------- the table */

/* Order matters: the first row whose substrings all occur wins, so the
 * more specific rows of a kind come first. */
static const ds_chat_family FAMILIES[] = {
    {"qwen3", 1, "Qwen3 (ChatML with <think> reasoning)", "", "<|im_end|>", {"<|im_start|>", "</think>"}, r_qwen3},
    {"qwen2.5", 1, "Qwen2 / Qwen2.5 Instruct (ChatML, Qwen's default system message)", "", "<|im_end|>",
     {"<|im_start|>", "You are Qwen, created by Alibaba Cloud"}, r_qwen25},
    {"chatml", 1, "ChatML (OpenHermes, Yi, InternLM2, ...)", "", "<|im_end|>", {"<|im_start|>"}, r_chatml},
    {"deepseek-r1", 1, "DeepSeek-R1 and its Llama / Qwen distills", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
     {"<｜User｜>", "<｜Assistant｜>", "</think>"}, r_deepseek_r1},
    {"llama3.1", 1, "Llama 3.1 / 3.2 / 3.3 Instruct", "<|begin_of_text|>", "<|eot_id|>",
     {"<|start_header_id|>", "Cutting Knowledge Date"}, r_llama31},
    {"llama3", 1, "Llama 3 Instruct", "<|begin_of_text|>", "<|eot_id|>", {"<|start_header_id|>", "<|end_header_id|>"},
     r_llama3},
    {"mistral-v7", 1, "Mistral v7 (Mistral-Large-Instruct-2411)", "<s>", "</s>", {"[SYSTEM_PROMPT] ", "[INST]"},
     r_mistral_v7},
    /* its default system message comes from the template's text (opts.jinja) */
    {"mistral-v7-tekken", 2, "Mistral v7 Tekken (Mistral-Small-3.1)", "<s>", "</s>",
     {"[SYSTEM_PROMPT]", "[AVAILABLE_TOOLS]"}, r_mistral_v7_tekken},
    {"mistral-v1", 1, "Mistral v1 (Mistral-7B-Instruct-v0.1/v0.2, revised)", "<s>", "</s>",
     {"' [INST] ' + system_message"}, r_mistral_v1},
    {"mistral-v3-tekken", 1, "Mistral v3 Tekken (Mistral-Nemo-Instruct-2407)", "<s>", "</s>",
     {"[AVAILABLE_TOOLS]", "\"[INST]\""}, r_mistral_v3_tekken},
    {"mistral-v3", 1, "Mistral v3 (Mistral-7B-Instruct-v0.3, Mistral-Large-2407)", "<s>", "</s>",
     {"[AVAILABLE_TOOLS]", "[INST]"}, r_mistral_v3},
    {"llama2", 1, "Llama 2 chat", "<s>", "</s>", {"[INST]", "<<SYS>>"}, r_llama2},
    {"gemma3", 1, "Gemma 3 (a system message folded into the first turn)", "<bos>", "<eos>",
     {"<start_of_turn>", "first_user_prefix"}, r_gemma3},
    {"gemma2", 1, "Gemma 2 / Gemma (no system message)", "<bos>", "<eos>", {"<start_of_turn>"}, r_gemma2},
    {"phi3", 1, "Phi-3 mini / medium as first released", "<s>", "<|endoftext|>",
     {"<|assistant|>", "+ '<|end|>' + '"}, r_phi3},
    {"phi3.5", 1, "Phi-3.5 mini (and Phi-3 mini's revised template)", "<s>", "<|endoftext|>",
     {"<|assistant|>", "<|end|>"}, r_phi35},
};
#define N_FAMILIES (int)(sizeof FAMILIES / sizeof FAMILIES[0])

int ds_chat_count(void) { return N_FAMILIES; }
const ds_chat_family *ds_chat_at(int i) { return i >= 0 && i < N_FAMILIES ? &FAMILIES[i] : NULL; }
const char *ds_chat_name(const ds_chat_family *f) { return f->name; }
int ds_chat_version(const ds_chat_family *f) { return f->version; }
const char *ds_chat_models(const ds_chat_family *f) { return f->models; }
const char *ds_chat_bos(const ds_chat_family *f) { return f->bos; }
const char *ds_chat_eos(const ds_chat_family *f) { return f->eos; }

ds_chat_opts ds_chat_default_opts(void) {
    ds_chat_opts o = {0, NULL, NULL, NULL, -1, NULL};
    return o;
}

const ds_chat_family *ds_chat_find(const char *name) {
    const char *at = strchr(name, '@');
    size_t n = at ? (size_t)(at - name) : strlen(name);
    int version = at ? atoi(at + 1) : 0;
    for (int i = 0; i < N_FAMILIES; i++)
        if (strlen(FAMILIES[i].name) == n && strncmp(FAMILIES[i].name, name, n) == 0 &&
            (!at || FAMILIES[i].version == version))
            return &FAMILIES[i];
    return NULL;
}

/* "chatml, llama2, ..." into buf. */
static const char *name_list(char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < N_FAMILIES && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%s", i ? ", " : "", FAMILIES[i].name);
    return buf;
}

int ds_chat_detect(const char *jinja, const ds_chat_family **out) {
    for (int i = 0; i < N_FAMILIES; i++) {
        int all = 1;
        for (int k = 0; FAMILIES[i].detect[k] && all; k++) all = strstr(jinja, FAMILIES[i].detect[k]) != NULL;
        if (all && !FAMILIES[i].render)
            return kv_errorf(KV_EUNSUPPORTED, "chat template recognised as %s (%s), which kvbench does not render; "
                             "name another family with chat = NAME if it is equivalent, or chat = none",
                             FAMILIES[i].name, FAMILIES[i].models);
        if (all) {
            *out = &FAMILIES[i];
            return 0;
        }
    }
    char names[512];
    return kv_errorf(KV_ENOTFOUND,
                     "chat template not recognised (it begins \"%.40s\"): no family's substrings occur in it; "
                     "name its family with chat = NAME, one of: %s (or chat = none for plain text)",
                     jinja, name_list(names, sizeof names));
}

int ds_chat_resolve(const char *setting, const char *jinja, const ds_chat_family **out) {
    *out = NULL;
    if (strcmp(setting, "none") == 0) return 0;
    if (strcmp(setting, "auto") == 0) {
        if (!jinja)
            return kv_errorf(KV_EINVAL, "chat = auto: the model has no chat template; give chat = NAME or none");
        return ds_chat_detect(jinja, out);
    }
    if ((*out = ds_chat_find(setting)) && (*out)->render) return 0;
    if (*out) {
        *out = NULL;
        return kv_errorf(KV_EUNSUPPORTED, "chat = %s: recognised but not rendered by kvbench", setting);
    }
    char names[512];
    return kv_errorf(KV_ENOTFOUND, "chat = %s: no such chat template family; one of: auto, none, %s", setting,
                     name_list(names, sizeof names));
}

/* Turns YYYY-MM-DD into Llama's "26 Jul 2024". */
static int llama_date(const char *iso, char out[16]) {
    static const char *const MON[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int y, m, d;
    char tail;
    if (sscanf(iso, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || m < 1 || m > 12 || d < 1 || d > 31)
        return kv_errorf(KV_EINVAL, "chat date '%s': expected YYYY-MM-DD", iso);
    snprintf(out, 16, "%02d %s %04d", d, MON[m - 1], y);
    return 0;
}

int ds_chat_render(const ds_chat_family *f, const ds_chat_msg *msgs, int n, const ds_chat_opts *o, char **out,
                   size_t *len) {
    ds_chat_opts def = ds_chat_default_opts();
    if (!o) o = &def;
    if (!f->render) return kv_errorf(KV_EUNSUPPORTED, "chat template %s: recognised but not rendered by kvbench", f->name);
    if (n <= 0) return kv_errorf(KV_EINVAL, "chat template %s: no messages to render", f->name);
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return kv_errorf(KV_EINVAL, "chat message %d: a role and a content are required", i);
        if (strcmp(msgs[i].role, "system") && strcmp(msgs[i].role, "user") && strcmp(msgs[i].role, "assistant"))
            return kv_errorf(KV_EINVAL, "chat message %d: role '%s'; expected system, user or assistant", i,
                             msgs[i].role);
    }
    const char *iso = o->date ? o->date : "2024-07-26";
    chat_call c = {f,   msgs,   n, o->add_generation_prompt, o->bos ? o->bos : f->bos, o->eos ? o->eos : f->eos, {0},
                   o->enable_thinking, iso, o->jinja};
    int rc = llama_date(iso, c.date);
    if (rc) return rc;
    ds_str s = {0};
    if ((rc = add(&s, "")) || (rc = f->render(&c, &s))) {
        free(s.p);
        return rc == KV_ENOMEM ? kv_errorf(KV_ENOMEM, "chat template %s: out of memory", f->name) : rc;
    }
    *out = s.p;
    *len = s.n;
    return 0;
}

/* ------------------------------------------------------------- sources */

/* A tokenizer_config.json special token: a string, {"content": ...}, or
 * null (no such token: ""). */
static char *config_token(const cJSON *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? strdup(v->valuestring) : cJSON_IsNull(v) ? strdup("") : NULL;
}

int ds_chat_source_config(const char *path, ds_chat_source *out) {
    memset(out, 0, sizeof *out);
    char *text;
    int rc = kv_read_file(path, &text, NULL);
    if (rc) return rc;
    cJSON *c = cJSON_Parse(text);
    free(text);
    if (!c) return kv_errorf(KV_EFORMAT, "%s: not valid JSON", path);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(c, "chat_template");
    if (cJSON_IsArray(t)) { /* named templates: the conversation one is "default", as transformers picks */
        const cJSON *e, *pick = NULL;
        cJSON_ArrayForEach(e, t) {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tt = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (!cJSON_IsString(n) || !cJSON_IsString(tt)) {
                cJSON_Delete(c);
                return kv_errorf(KV_EFORMAT, "%s: chat_template: expected a string or a list of {name, template}", path);
            }
            if (!strcmp(n->valuestring, "default")) pick = tt;
        }
        if (!pick) {
            cJSON_Delete(c);
            return kv_errorf(KV_EFORMAT, "%s: chat_template is a list of named templates without one named \"default\"",
                             path);
        }
        t = pick;
    }
    if (cJSON_IsString(t) && !(out->jinja = strdup(t->valuestring))) {
        cJSON_Delete(c);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    out->bos = config_token(c, "bos_token");
    out->eos = config_token(c, "eos_token");
    cJSON_Delete(c);
    return 0;
}

void ds_chat_source_free(ds_chat_source *s) {
    free(s->jinja);
    free(s->bos);
    free(s->eos);
    memset(s, 0, sizeof *s);
}
