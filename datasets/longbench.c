/* longbench.c - LongBench v1's tasks, rows, prompts and truncation; see
 * longbench.h. */
#define _POSIX_C_SOURCE 200809L
#include "longbench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../base/kv_error.h"
#include "internal.h"
#include "json_util.h"

/* ---------------------------------------------------------------- the tasks */

/* The prompts are data quoted from THUDM/LongBench at commit 2e00731
 * (2025-01-15), LongBench/config/dataset2prompt.json, byte for byte
 * (narrativeqa's "asconcisely" included: it is what the models were given);
 * the generation lengths from config/dataset2maxlen.json; the scorers from
 * eval.py's dataset2metric; no_chat is pred.py's list of datasets left
 * without build_chat (trec, triviaqa, samsum, lsht, lcc, repobench-p);
 * samsum's newline stop is pred.py's extra eos_token_id; in_e is pred.py's
 * LongBench-E dataset list. */
#define LB_MULTIHOP                                                                                                  \
    "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\n" \
    "The following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me "  \
    "the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"

static const ds_lb_task TASKS[] = {
    {"narrativeqa",
     "You are given a story, which can be either a novel or a movie script, and a question. Answer the question "
     "asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: "
     "{context}\n\nNow, answer the question based on the story asconcisely as you can, using a single phrase if "
     "possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
     128, "qa_f1_score", 0, 0, "en", 0},
    {"qasper",
     "You are given a scientific article and a question. Answer the question as concisely as you can, using a single "
     "phrase or sentence if possible. If the question cannot be answered based on the information in the article, "
     "write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not "
     "provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as concisely "
     "as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the "
     "information in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", "
     "\"no\", or \"unanswerable\". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
     128, "qa_f1_score", 0, 0, "en", 1},
    {"multifieldqa_en",
     "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the "
     "above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
     64, "qa_f1_score", 0, 0, "en", 1},
    {"multifieldqa_zh",
     "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。"
     "\n\n问题：{input}\n回答：",
     64, "qa_f1_zh_score", 0, 0, "zh", 0},
    {"hotpotqa", LB_MULTIHOP, 32, "qa_f1_score", 0, 0, "en", 1},
    {"2wikimqa", LB_MULTIHOP, 32, "qa_f1_score", 0, 0, "en", 1},
    {"musique", LB_MULTIHOP, 32, "qa_f1_score", 0, 0, "en", 0},
    {"dureader", "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：",
     128, "rouge_zh_score", 0, 0, "zh", 0},
    {"gov_report",
     "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}\n\n"
     "Now, write a one-page summary of the report.\n\nSummary:",
     512, "rouge_score", 0, 0, "en", 1},
    {"qmsum",
     "You are given a meeting transcript and a query containing a question or instruction. Answer the query in one "
     "or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript in "
     "one or more sentences.\n\nQuery: {input}\nAnswer:",
     512, "rouge_score", 0, 0, "en", 0},
    {"multi_news",
     "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, write "
     "a one-page summary of all the news.\n\nSummary:",
     512, "rouge_score", 0, 0, "en", 1},
    {"vcsum", "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结：", 512,
     "rouge_zh_score", 0, 0, "zh", 0},
    {"trec",
     "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}",
     64, "classification_score", 1, 0, "en", 1},
    {"triviaqa",
     "Answer the question based on the given passage. Only give me the answer and do not output any other words. "
     "The following are some examples.\n\n{context}\n\n{input}",
     32, "qa_f1_score", 1, 0, "en", 1},
    {"samsum",
     "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}",
     128, "rouge_score", 1, 1, "en", 1},
    {"lsht", "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}", 64, "classification_score", 1, 0, "zh", 0},
    {"passage_count",
     "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read "
     "these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, "
     "how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of unique "
     "paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and "
     "so on.\n\nThe final answer is: ",
     32, "count_score", 0, 0, "en", 1},
    {"passage_retrieval_en",
     "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is "
     "from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the paragraph that "
     "the abstract is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: ",
     32, "retrieval_score", 0, 0, "en", 1},
    {"passage_retrieval_zh",
     "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n"
     "请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式\n\n答案是：",
     32, "retrieval_zh_score", 0, 0, "zh", 0},
    {"lcc", "Please complete the code given below. \n{context}Next line of code:\n", 64, "code_sim_score", 1, 0,
     "code", 1},
    {"repobench-p", "Please complete the code given below. \n{context}{input}Next line of code:\n", 64,
     "code_sim_score", 1, 0, "code", 1},
};
#define N_TASKS (int)(sizeof TASKS / sizeof TASKS[0])

int ds_lb_task_count(void) { return N_TASKS; }
const ds_lb_task *ds_lb_task_at(int i) { return i >= 0 && i < N_TASKS ? &TASKS[i] : NULL; }

const ds_lb_task *ds_lb_task_find(const char *name) {
    for (int i = 0; i < N_TASKS; i++)
        if (!strcmp(TASKS[i].name, name)) return &TASKS[i];
    return NULL;
}

/* config/model2maxlen.json at the same commit. */
static const ds_lb_model_len MODEL_LENS[] = {
    {"llama2-7b-chat-4k", 3500},      {"longchat-v1.5-7b-32k", 31500}, {"xgen-7b-8k", 7500},
    {"internlm-7b-8k", 7500},         {"chatglm2-6b", 31500},          {"chatglm2-6b-32k", 31500},
    {"chatglm3-6b-32k", 31500},       {"vicuna-v1.5-7b-16k", 15500},
};

int ds_lb_model_len_count(void) { return (int)(sizeof MODEL_LENS / sizeof MODEL_LENS[0]); }
const ds_lb_model_len *ds_lb_model_len_at(int i) {
    return i >= 0 && i < ds_lb_model_len_count() ? &MODEL_LENS[i] : NULL;
}

int ds_lb_data_path(const char *dir, const ds_lb_task *t, int e, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "%s/%s%s.jsonl", dir, t->name, e ? "_e" : "");
    if (n < 0 || (size_t)n >= cap) return kv_errorf(KV_EINVAL, "LongBench data path too long: %s/%s", dir, t->name);
    return KV_OK;
}

/* ---------------------------------------------------------------- rows */

/* 1 if v is an array of strings (null too when null_ok). */
static int string_array(const cJSON *v, int null_ok) {
    if (null_ok && cJSON_IsNull(v)) return 1;
    if (!cJSON_IsArray(v)) return 0;
    for (const cJSON *it = v->child; it; it = it->next)
        if (!cJSON_IsString(it)) return 0;
    return 1;
}

typedef struct load_state {
    char *classes;      /* the first row's all_classes as JSON */
    long classes_line;
    int warned;
} load_state;

/* eval.py scores every row with the last row's all_classes: say so once
 * when the rows disagree, since a run scores each row with its own. */
static void check_classes(load_state *st, const ds_load_params *p, long line, const char *json) {
    if (!st->classes) {
        st->classes = strdup(json);
        st->classes_line = line;
        return;
    }
    if (st->warned || !strcmp(st->classes, json)) return;
    fprintf(stderr,
            "%s:%ld: warning: all_classes differs from line %ld's; kvbench scores each row with its own, LongBench's "
            "eval.py every row with the last line's\n",
            p->path, line, st->classes_line);
    st->warned = 1;
}

/* The JSON texts of a row's answers and all_classes, checked. */
static int row_lists(const ds_load_params *p, ds_set *out, long line, const cJSON *o, char **answers, char **classes) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "answers");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "all_classes");
    if (!string_array(a, 0)) return ds_bad_row(p, out, line, "field 'answers' is missing or not a list of strings");
    if (!c || !string_array(c, 1))
        return ds_bad_row(p, out, line, "field 'all_classes' is missing or neither null nor a list of strings");
    *answers = cJSON_PrintUnformatted(a);
    *classes = cJSON_PrintUnformatted(c);
    if (!*answers || !*classes) return kv_errorf(KV_ENOMEM, "out of memory");
    return KV_OK;
}

static int lb_object(void *user, const ds_load_params *p, ds_set *out, long line, const cJSON *o) {
    load_state *st = user;
    const char *context = ds_json_string(o, "context"), *input = ds_json_string(o, "input");
    const cJSON *len = cJSON_GetObjectItemCaseSensitive(o, "length");
    if (!context || !input)
        return ds_bad_row(p, out, line, "field '%s' is missing or not a string", !context ? "context" : "input");
    if (!cJSON_IsNumber(len) || !(len->valuedouble >= 0 && len->valuedouble < 2147483647.0))
        return ds_bad_row(p, out, line, "field 'length' is missing or not a non-negative number");
    char *answers = NULL, *classes = NULL;
    ds_str ref = {0};
    int n_before = out->n;
    int rc = row_lists(p, out, line, o, &answers, &classes);
    if (!rc && answers) rc = ds_json_text(o, "answers", "\n", &ref) ? kv_errorf(KV_ENOMEM, "out of memory") : KV_OK;
    if (!rc && answers) {
        check_classes(st, p, line, classes);
        const char *lang = ds_json_string(o, "language");
        char idbuf[32];
        snprintf(idbuf, sizeof idbuf, "line%ld", line);
        const char *id = ds_json_string(o, "_id");
        const char *names[] = {"context", "input", "answers", "all_classes", "language"};
        const char *values[] = {context, input, answers, classes, lang ? lang : ""};
        rc = ds_set_add(out, id && *id ? id : idbuf, names, values, 5, ref.p ? ref.p : "");
        if (!rc && out->n > n_before) out->s[out->n - 1].length = (int32_t)len->valuedouble;
    }
    cJSON_free(answers);
    cJSON_free(classes);
    free(ref.p);
    return rc;
}

int ds_lb_load(const ds_load_params *p, ds_set *out) {
    memset(out, 0, sizeof *out);
    load_state st = {0};
    int rc = ds_each_object(p, out, lb_object, &st);
    free(st.classes);
    if (rc == KV_OK && out->n == 0) rc = kv_errorf(KV_EFORMAT, "%s: no usable LongBench rows", p->path);
    if (rc) ds_set_free(out);
    return rc;
}

int ds_lb_strings(const ds_sample *s, const char *field, char ***items, int *n) {
    *items = NULL;
    *n = 0;
    const char *json = ds_sample_field(s, field);
    cJSON *v = json ? cJSON_Parse(json) : NULL;
    if (!v || !string_array(v, 1)) {
        cJSON_Delete(v);
        return kv_errorf(KV_EFORMAT, "sample %s: field '%s' is not a JSON list of strings or null", s->id, field);
    }
    int rc = KV_OK, k = cJSON_GetArraySize(v);
    if (cJSON_IsArray(v) && k > 0) {
        if (!(*items = calloc((size_t)k, sizeof **items))) rc = kv_errorf(KV_ENOMEM, "out of memory");
        for (const cJSON *it = v->child; !rc && it; it = it->next) {
            if (!((*items)[*n] = strdup(it->valuestring))) rc = kv_errorf(KV_ENOMEM, "out of memory");
            else (*n)++;
        }
    }
    cJSON_Delete(v);
    if (rc) {
        ds_lb_strings_free(*items, *n);
        *items = NULL;
        *n = 0;
    }
    return rc;
}

void ds_lb_strings_free(char **items, int n) {
    for (int i = 0; i < n; i++) free(items[i]);
    free(items);
}

/* ---------------------------------------------------------------- prompts */

int ds_lb_format(const ds_lb_task *t, const ds_sample *s, char **out) {
    ds_str o = {0};
    int rc = ds_str_add(&o, "", 0);
    for (const char *p = t->prompt; !rc && *p;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) { /* an escaped brace */
            rc = ds_str_add(&o, p, 1);
            p += 2;
        } else if (*p == '{') {
            const char *close = strchr(p, '}');
            char name[64];
            size_t n = close ? (size_t)(close - p - 1) : 0;
            if (!close || n == 0 || n >= sizeof name) {
                rc = kv_errorf(KV_EINVAL, "LongBench task %s: malformed placeholder in its prompt", t->name);
                break;
            }
            memcpy(name, p + 1, n);
            name[n] = 0;
            const char *v = ds_sample_field(s, name);
            if (!v) rc = kv_errorf(KV_EINVAL, "sample %s: LongBench task %s's prompt needs field '%s'", s->id, t->name, name);
            else rc = ds_str_adds(&o, v);
            p = close + 1;
        } else if (*p == '}') {
            rc = kv_errorf(KV_EINVAL, "LongBench task %s: single '}' in its prompt", t->name);
        } else {
            size_t n = strcspn(p, "{}");
            rc = ds_str_add(&o, p, n);
            p += n;
        }
    }
    if (rc) {
        free(o.p);
        return rc;
    }
    *out = o.p;
    return KV_OK;
}

/* How many bytes of the valid UTF-8 character at s[0..len) there are
 * (0: s[0] starts no valid character); *sub gets the length of the
 * maximal subpart that is a valid prefix (at least 1). */
static size_t utf8_char(const unsigned char *s, size_t len, size_t *sub) {
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* the second byte's range */
    *sub = 1;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    for (size_t k = 1; k < need; k++) {
        unsigned char b = k < len ? s[k] : 0;
        int ok = k < len && (k == 1 ? b >= lo && b <= hi : b >= 0x80 && b <= 0xBF);
        if (!ok) return 0;
        *sub = k + 1;
    }
    return need;
}

int ds_lb_utf8_replace(const char *text, size_t len, int per_byte, char **out, size_t *out_len) {
    ds_str o = {0};
    int rc = ds_str_add(&o, "", 0);
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; !rc && i < len;) {
        size_t sub, n = utf8_char(s + i, len - i, &sub);
        if (n) {
            size_t run = n; /* copy a run of valid characters at once */
            while (i + run < len && (n = utf8_char(s + i + run, len - i - run, &sub)) != 0) run += n;
            rc = ds_str_add(&o, text + i, run);
            i += run;
        } else {
            rc = ds_str_add(&o, "\xEF\xBF\xBD", 3);
            i += per_byte ? 1 : sub;
        }
    }
    if (rc) {
        free(o.p);
        return rc;
    }
    *out = o.p;
    *out_len = o.n;
    return KV_OK;
}

/* decode(ids[0..n)) as Python text, appended to o. */
static int decode_part(const ds_lb_codec *c, const int32_t *ids, int64_t n, ds_str *o) {
    char *raw = NULL, *txt = NULL;
    size_t raw_len = 0, txt_len = 0;
    int rc = c->decode(c->user, ids, n, &raw, &raw_len);
    if (!rc) rc = ds_lb_utf8_replace(raw ? raw : "", raw_len, c->per_byte, &txt, &txt_len);
    if (!rc) rc = ds_str_add(o, txt, txt_len);
    free(raw);
    free(txt);
    return rc;
}

int ds_lb_truncate(const ds_lb_codec *c, const char *prompt, int32_t max_length, char **out, int64_t *n_tokens,
                   int *truncated) {
    *out = NULL;
    *truncated = 0;
    const int32_t *ids0;
    int64_t n = c->encode(c->user, prompt, strlen(prompt), &ids0);
    if (n < 0) return (int)n;
    *n_tokens = n;
    if (n <= max_length) {
        if (!(*out = strdup(prompt))) return kv_errorf(KV_ENOMEM, "out of memory");
        return KV_OK;
    }
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) return kv_errorf(KV_ENOMEM, "out of memory");
    memcpy(ids, ids0, (size_t)n * sizeof *ids);
    /* half = int(max_length / 2); ids[-half:] with half = 0 is Python's
     * ids[0:], the whole list, and so it is here */
    int64_t half = max_length / 2, tail = half > 0 ? half : n;
    ds_str o = {0};
    int rc = ds_str_add(&o, "", 0);
    if (!rc) rc = decode_part(c, ids, half, &o);
    if (!rc) rc = decode_part(c, ids + (n - tail), tail, &o);
    free(ids);
    if (rc) {
        free(o.p);
        return rc;
    }
    *out = o.p;
    *truncated = 1;
    return KV_OK;
}
