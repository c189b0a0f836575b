/* template.h - named, versioned prompt templates.
 *
 * A template is text with {field} placeholders filled from a sample's
 * fields. One field (its `cut` field: the document or context) is the one
 * truncated when the rendered prompt exceeds a token budget; the template's
 * own words are never cut, so the instruction and the answer cue survive
 * (the papers truncate the article, not the "### Response:" cue). Each
 * result records the template's name@version, so a changed wording is a
 * new version, never a silent edit. */
#ifndef DS_TEMPLATE_H
#define DS_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"

typedef struct ds_template {
    const char *name;    /* "keyformer-summ" */
    int version;         /* bumped whenever the text changes */
    const char *kind;    /* the task kind it is written for */
    const char *cut;     /* the field truncated to fit a budget */
    int cut_middle;      /* 0: cut its end; 1: cut its middle, keeping head
                            and tail (when the question sits at the end of
                            the field, as in RULER's inputs: LongBench's rule) */
    const char *text;    /* with {field} placeholders */
    const char *summary; /* where it comes from */
    /* Where the question begins: a substring of `text` (its first
     * occurrence), everything from there on being the question part, which
     * holds no cut field. NULL: the prompt has no separable question. Lets
     * the question be asked after the context is compressed. */
    const char *qsplit;
} ds_template;

/* By name ("keyformer-summ") or name@version ("keyformer-summ@1"); NULL if unknown. */
const ds_template *ds_template_find(const char *name);
int ds_template_count(void);
const ds_template *ds_template_at(int i);

/* Renders t for sample s into a malloc'd string. When max_tokens > 0 and the
 * prompt counts more tokens than that, the cut field is shortened from its
 * end (or, for cut_middle templates, from its middle: equal parts of head
 * and tail kept), at character and then word boundaries, to the longest
 * that fits; *cut_chars receives how many characters were removed (0 when
 * none). A placeholder naming a field the sample lacks is KV_EINVAL, naming
 * both. */
int ds_template_render(const ds_template *t, const ds_sample *s, int32_t max_tokens, ds_count_tokens_fn count,
                       void *user, char **out, size_t *cut_chars);

/* The byte offset in `rendered` (ds_template_render's output for s) where
 * the question part begins. KV_EINVAL naming the template when it has none
 * (qsplit NULL) or the rendering does not end with it. */
int ds_template_question_at(const ds_template *t, const ds_sample *s, const char *rendered, size_t *offset);

#endif
