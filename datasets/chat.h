/* chat.h - the chat templates of instruction-tuned models, without Jinja.
 *
 * A model's chat template (a GGUF's tokenizer.chat_template, a
 * tokenizer_config.json's chat_template) is Jinja text. kvbench does not
 * run Jinja: it recognises which family a template belongs to by substrings
 * only that family's templates hold (llama.cpp's approach, in its
 * src/llama-chat.cpp) and renders the messages with that family's own
 * function, written to give byte for byte what Hugging Face's Jinja gives
 * for the real template (tests/chat/ holds the renderings it is checked
 * against). A template no family recognises is an error naming the way
 * out: `chat = NAME`. Each family has a name and a version, bumped whenever
 * its output changes, for results to record.
 *
 * Messages are system, user and assistant turns with plain text content
 * (no tools, no images). Where the real template raises (Gemma 2 refuses a
 * system message; Gemma and Mistral refuse roles out of order), rendering
 * is KV_EINVAL with the template's own words. */
#ifndef DS_CHAT_H
#define DS_CHAT_H

#include <stddef.h>

typedef struct ds_chat_msg {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content;
} ds_chat_msg;

typedef struct ds_chat_opts {
    int add_generation_prompt; /* end with the assistant's header */
    const char *bos;           /* the text of BOS; NULL: the family's usual one, "" none */
    const char *eos;           /* the text of EOS; NULL: the family's usual one */
    /* The date the templates that print one print (Llama 3.x "Today Date:"),
     * as YYYY-MM-DD. NULL: 2024-07-26, the Llama 3.1 template's own
     * fallback. (Llama 3.2's template asks Hugging Face for today's date;
     * kvbench fixes it so a prompt does not change from day to day.) */
    const char *date;
    /* Qwen3's enable_thinking: -1 not given (the template thinks), 0 the
     * generation prompt gets an empty <think></think> block, 1 given true. */
    int enable_thinking;
    /* The template's own text, for what a family takes from it rather than
     * from kvbench's code: Mistral v7 Tekken's default system message (used
     * when the conversation has none; strftime_now's date is `date`).
     * NULL: none, and such a conversation is refused. */
    const char *jinja;
} ds_chat_opts;

/* Defaults: no generation prompt, the family's bos/eos, the fixed date,
 * enable_thinking not given, no template text. */
ds_chat_opts ds_chat_default_opts(void);

typedef struct ds_chat_family ds_chat_family; /* opaque; one per table row */

int ds_chat_count(void);
const ds_chat_family *ds_chat_at(int i);
const char *ds_chat_name(const ds_chat_family *f);    /* "llama3.1" */
int ds_chat_version(const ds_chat_family *f);
const char *ds_chat_models(const ds_chat_family *f);  /* which models use it */
const char *ds_chat_bos(const ds_chat_family *f);     /* usual BOS text ("" none) */
const char *ds_chat_eos(const ds_chat_family *f);     /* usual EOS text */

/* By name or name@version; NULL if none. */
const ds_chat_family *ds_chat_find(const char *name);

/* The family whose detector substrings all occur in the template text
 * (the first in table order). KV_ENOTFOUND when none does, the message
 * listing the names to give as `chat = NAME`. */
int ds_chat_detect(const char *jinja, const ds_chat_family **out);

/* What `chat = SETTING` means: "auto" detects from `jinja` (KV_EINVAL when
 * the model has no template), "none" sets *out = NULL (plain text, no chat
 * format), anything else is a family name (KV_ENOTFOUND listing them). */
int ds_chat_resolve(const char *setting, const char *jinja, const ds_chat_family **out);

/* Where a model keeps its template: a GGUF's tokenizer.chat_template and
 * the texts of its bos/eos token ids (read by harness/chat_gguf.h: a GGUF
 * is the engine's to read), or a tokenizer_config.json's chat_template,
 * bos_token and eos_token. Each out string is malloc'd, or NULL when the
 * source lacks it (a model without a template is not an error:
 * ds_chat_resolve says what that means). */
typedef struct ds_chat_source {
    char *jinja, *bos, *eos;
} ds_chat_source;
int ds_chat_source_config(const char *tokenizer_config_json, ds_chat_source *out);
void ds_chat_source_free(ds_chat_source *s);

/* Renders n messages into a malloc'd, NUL-terminated string (*len bytes).
 * Roles other than system/user/assistant, no messages, and whatever the
 * family's template refuses are KV_EINVAL. */
int ds_chat_render(const ds_chat_family *f, const ds_chat_msg *msgs, int n, const ds_chat_opts *o, char **out,
                   size_t *len);

#endif
