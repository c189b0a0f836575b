/* porter.c - the Porter stemmer in NLTK's NLTK_EXTENSIONS mode (see porter.h).
 *
 * The word is worked on in place in a buffer `w` of current length `n`; no
 * step makes it longer than the input (step 1b adds one letter only after
 * taking off two or three). Conditions are evaluated as the algorithm
 * states them: m is the measure (the number of vowel-run -> consonant-run
 * changes) of the stem left once the suffix is removed. */
#include "porter.h"

#include <string.h>

static int is_vowel_letter(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

/* Whether w[i] is a consonant: not a, e, i, o, u, and y only at the start or
 * after a vowel. Walks back over a run of y's instead of recursing, so a long
 * run costs its length, not a deep stack. */
static int is_cons(const char *w, size_t i) {
    if (is_vowel_letter(w[i])) return 0;
    if (w[i] != 'y') return 1;
    size_t j = i; /* w[j..i] are all y */
    while (j > 0 && w[j - 1] == 'y') j--;
    /* w[j] is a consonant if it starts the word or follows a vowel */
    int first_cons = (j == 0) ? 1 : !is_cons(w, j - 1); /* w[j-1] is not y: no recursion into y's */
    /* the run alternates from w[j] on */
    return ((i - j) % 2 == 0) ? first_cons : !first_cons;
}

/* The measure of w[0..n): the count of "vc" in its consonant/vowel pattern. */
static size_t measure(const char *w, size_t n) {
    size_t m = 0;
    int prev_cons = 1, prev_vowel = 0;
    for (size_t i = 0; i < n; i++) {
        int c;
        if (is_vowel_letter(w[i])) c = 0;
        else if (w[i] == 'y') c = (i == 0) ? 1 : !prev_cons;
        else c = 1;
        if (c && prev_vowel) m++;
        prev_vowel = !c;
        prev_cons = c;
    }
    return m;
}

static int contains_vowel(const char *w, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!is_cons(w, i)) return 1;
    return 0;
}

static int ends_double_cons(const char *w, size_t n) {
    return n >= 2 && w[n - 1] == w[n - 2] && is_cons(w, n - 1);
}

/* *o: consonant-vowel-consonant, the last not w, x or y; NLTK also accepts
 * a whole two-letter stem vowel-consonant. */
static int ends_cvc(const char *w, size_t n) {
    if (n >= 3 && is_cons(w, n - 3) && !is_cons(w, n - 2) && is_cons(w, n - 1) && w[n - 1] != 'w' &&
        w[n - 1] != 'x' && w[n - 1] != 'y')
        return 1;
    return n == 2 && !is_cons(w, 0) && is_cons(w, 1);
}

static int ends_with(const char *w, size_t n, const char *suf, size_t sl) {
    return n >= sl && memcmp(w + n - sl, suf, sl) == 0;
}

enum cond { C_NONE, C_M0, C_M1, C_ION, C_LOGI, C_LL };

typedef struct rule {
    const char *suf, *rep;
    enum cond cond;
} rule;

/* The rules are tried in order; the first whose suffix matches decides:
 * its replacement is made if its condition holds on the stem, and either way
 * no later rule is tried. Returns 1 if a suffix matched. */
static int apply_rules(char *w, size_t *n, const rule *rules, size_t nrules) {
    for (size_t r = 0; r < nrules; r++) {
        size_t sl = strlen(rules[r].suf);
        if (!ends_with(w, *n, rules[r].suf, sl)) continue;
        size_t s = *n - sl; /* stem length */
        int ok;
        switch (rules[r].cond) {
        case C_NONE: ok = 1; break;
        case C_M0: ok = measure(w, s) > 0; break;
        case C_M1: ok = measure(w, s) > 1; break;
        case C_ION: ok = measure(w, s) > 1 && s > 0 && (w[s - 1] == 's' || w[s - 1] == 't'); break;
        case C_LOGI: ok = measure(w, *n - 3) > 0; break; /* the l of -logi stays with the stem */
        case C_LL: ok = measure(w, *n - 1) > 1; break;   /* the measure of the word less one l */
        default: ok = 0; break;
        }
        if (ok) {
            size_t rl = strlen(rules[r].rep);
            memcpy(w + s, rules[r].rep, rl);
            *n = s + rl;
        }
        return 1;
    }
    return 0;
}

static void step1a(char *w, size_t *n) {
    if (*n == 4 && ends_with(w, *n, "ies", 3)) { /* ties -> tie */
        *n = 3;
        return;
    }
    static const rule r[] = {
        {"sses", "ss", C_NONE},
        {"ies", "i", C_NONE},
        {"ss", "ss", C_NONE},
        {"s", "", C_NONE},
    };
    apply_rules(w, n, r, sizeof r / sizeof r[0]);
}

static void step1b(char *w, size_t *n) {
    if (ends_with(w, *n, "ied", 3)) { /* died -> die, spied -> spi */
        if (*n == 4) *n = 3;
        else *n -= 2;
        return;
    }
    if (ends_with(w, *n, "eed", 3)) { /* (m>0) EED -> EE, and nothing else */
        if (measure(w, *n - 3) > 0) *n -= 1;
        return;
    }
    size_t s;
    if (ends_with(w, *n, "ed", 2)) s = *n - 2;
    else if (ends_with(w, *n, "ing", 3)) s = *n - 3;
    else return;
    if (!contains_vowel(w, s)) return;
    *n = s; /* (*v*) ED -> , (*v*) ING -> ; then tidy the stem: */
    if (ends_with(w, s, "at", 2) || ends_with(w, s, "bl", 2) || ends_with(w, s, "iz", 2)) {
        w[s] = 'e'; /* AT -> ATE, BL -> BLE, IZ -> IZE */
        *n = s + 1;
    } else if (ends_double_cons(w, s)) {
        char c = w[s - 1];
        if (c != 'l' && c != 's' && c != 'z') *n = s - 1; /* hopp -> hop, but fall, hiss, fizz stay */
    } else if (measure(w, s) == 1 && ends_cvc(w, s)) {
        w[s] = 'e'; /* (m=1 and *o) -> E: fil -> file */
        *n = s + 1;
    }
}

static void step1c(char *w, size_t *n) {
    /* (*c and not c) Y -> I: a consonant before the y, which is not the first letter */
    if (*n >= 1 && w[*n - 1] == 'y') {
        size_t s = *n - 1;
        if (s > 1 && is_cons(w, s - 1)) w[s] = 'i';
    }
}

static void step2(char *w, size_t *n) {
    if (ends_with(w, *n, "alli", 4) && measure(w, *n - 4) > 0) *n -= 2; /* -alli -> -al, then on */
    static const rule r[] = {
        {"ational", "ate", C_M0}, {"tional", "tion", C_M0}, {"enci", "ence", C_M0},  {"anci", "ance", C_M0},
        {"izer", "ize", C_M0},    {"bli", "ble", C_M0},     {"alli", "al", C_M0},    {"entli", "ent", C_M0},
        {"eli", "e", C_M0},       {"ousli", "ous", C_M0},   {"ization", "ize", C_M0}, {"ation", "ate", C_M0},
        {"ator", "ate", C_M0},    {"alism", "al", C_M0},    {"iveness", "ive", C_M0}, {"fulness", "ful", C_M0},
        {"ousness", "ous", C_M0}, {"aliti", "al", C_M0},    {"iviti", "ive", C_M0},  {"biliti", "ble", C_M0},
        {"fulli", "ful", C_M0},   {"logi", "log", C_LOGI},
    };
    apply_rules(w, n, r, sizeof r / sizeof r[0]);
}

static void step3(char *w, size_t *n) {
    static const rule r[] = {
        {"icate", "ic", C_M0}, {"ative", "", C_M0}, {"alize", "al", C_M0}, {"iciti", "ic", C_M0},
        {"ical", "ic", C_M0},  {"ful", "", C_M0},   {"ness", "", C_M0},
    };
    apply_rules(w, n, r, sizeof r / sizeof r[0]);
}

static void step4(char *w, size_t *n) {
    static const rule r[] = {
        {"al", "", C_M1},   {"ance", "", C_M1}, {"ence", "", C_M1},  {"er", "", C_M1},   {"ic", "", C_M1},
        {"able", "", C_M1}, {"ible", "", C_M1}, {"ant", "", C_M1},   {"ement", "", C_M1}, {"ment", "", C_M1},
        {"ent", "", C_M1},  {"ion", "", C_ION}, {"ou", "", C_M1},    {"ism", "", C_M1},  {"ate", "", C_M1},
        {"iti", "", C_M1},  {"ous", "", C_M1},  {"ive", "", C_M1},   {"ize", "", C_M1},
    };
    apply_rules(w, n, r, sizeof r / sizeof r[0]);
}

static void step5a(char *w, size_t *n) {
    /* (m>1) E -> ; (m=1 and not *o) E -> : both conditions are tried */
    if (*n >= 1 && w[*n - 1] == 'e') {
        size_t s = *n - 1, m = measure(w, s);
        if (m > 1 || (m == 1 && !ends_cvc(w, s))) *n = s;
    }
}

static void step5b(char *w, size_t *n) {
    static const rule r[] = {{"ll", "l", C_LL}};
    apply_rules(w, n, r, 1);
}

/* NLTK's irregular forms, looked up on the whole word before anything else. */
static const char *const irregular[][2] = {
    {"skies", "sky"},      {"sky", "sky"},         {"dying", "die"},     {"lying", "lie"},
    {"tying", "tie"},      {"news", "news"},       {"innings", "inning"}, {"inning", "inning"},
    {"outings", "outing"}, {"outing", "outing"},   {"cannings", "canning"}, {"canning", "canning"},
    {"howe", "howe"},      {"proceed", "proceed"}, {"exceed", "exceed"}, {"succeed", "succeed"},
};

size_t kv_porter_stem(const char *word, size_t len, char *out) {
    if (out != word) memmove(out, word, len);
    for (size_t i = 0; i < len; i++)
        if (out[i] >= 'A' && out[i] <= 'Z') out[i] = (char)(out[i] - 'A' + 'a');
    out[len] = 0;
    for (size_t k = 0; k < sizeof irregular / sizeof irregular[0]; k++) {
        if (strlen(irregular[k][0]) == len && memcmp(out, irregular[k][0], len) == 0) {
            size_t sl = strlen(irregular[k][1]);
            memcpy(out, irregular[k][1], sl + 1);
            return sl;
        }
    }
    if (len <= 2) return len;
    size_t n = len;
    step1a(out, &n);
    step1b(out, &n);
    step1c(out, &n);
    step2(out, &n);
    step3(out, &n);
    step4(out, &n);
    step5a(out, &n);
    step5b(out, &n);
    out[n] = 0;
    return n;
}
