/* prompt.h - a sample's prompt as a run reads it: the task's template
 * (its cut field truncated to the token budget), wrapped in the model's
 * chat template when the run asks for one, and where its question begins.
 *
 * With a chat template the template's text is the user message (after an
 * optional system message) and the generation prompt follows; the budget
 * counts the wrap's tokens too, so the document is what gets cut. BOS is
 * added as the tokenizer's id, never as text, so a chat wrap and a plain
 * prompt begin the same way. The question (templates with a question part:
 * passkey, needle) is located in the final text, so that the context can be
 * compressed before it is read (question = after_compression). A suffix
 * field (RULER's answer_prefix) follows the chat wrap, as RULER appends it
 * after the chat-wrapped input, and belongs to the question part. */
#ifndef HX_PROMPT_H
#define HX_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "../datasets/chat.h"
#include "../datasets/dataset.h"
#include "../datasets/longbench.h"
#include "../datasets/template.h"

typedef struct hx_prompt_spec {
    const ds_template *tp;
    const ds_chat_family *chat;   /* NULL: the template's text as is */
    const char *system;           /* the chat's system message, or NULL */
    const char *jinja;            /* the model's template text (a family may read from it), or NULL */
    int32_t max_tokens;           /* the whole prompt's tokens, BOS included */
    int want_question;            /* locate the question (question = after_compression) */
    const char *suffix_field;     /* a field appended after the chat wrap (RULER's answer_prefix), or NULL */
    ds_count_tokens_fn count;     /* tokens of a text, BOS not included */
    void *user;
} hx_prompt_spec;

typedef struct hx_prompt {
    char *text;          /* malloc'd: what is tokenized (BOS not in it) */
    size_t cut_chars;    /* characters the template's cut field lost */
    size_t question_at;  /* byte offset of the question in text (want_question) */
    int32_t wrap_tokens; /* tokens the chat wrap adds (0 without one) */
} hx_prompt;

/* Renders sample s. KV_EINVAL naming the sample and template when it
 * cannot fit, has no question part, or the chat template refuses it. */
int hx_prompt_render(const hx_prompt_spec *ps, const ds_sample *s, hx_prompt *out);
/* A LongBench task's prompt as its pred.py builds it: the task's prompt
 * formatted with the sample's fields, cut in the middle to ps->max_tokens
 * tokens (pred.py's max_length, BOS counted) through the codec, then wrapped
 * in ps->chat unless the task is one pred.py leaves unwrapped. The wrap is
 * not counted against max_length (pred.py truncates before it wraps).
 * ps->tp, want_question and suffix_field are not used. */
int hx_prompt_longbench(const hx_prompt_spec *ps, const ds_lb_task *t, const ds_sample *s, const ds_lb_codec *c,
                        hx_prompt *out);

void hx_prompt_free(hx_prompt *p);

#endif
