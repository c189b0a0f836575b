/* sentences.c - see sentences.h. */
#include <ctype.h>
#include <string.h>

#include "sentences.h"

static const char *const ABBREV[] = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "gen", "gov",
                                     "sen", "rep", "rev", "lt", "col", "sgt", "capt", "cmdr", "adm", "maj", "insp",
                                     "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
                                     "dec", "no", "vs", "p", "pp", "vol", "fig", "ch", "sec", "etc", "inc", "ltd", "co", "corp", "u.s", "u.k", "u.n",
                                     "e.g", "i.e", "a.m", "p.m", "d.c", "l.a", "approx", "est", "dept", "univ"};

/* Is the word ending just before text[end] (the '.') an abbreviation? */
static int is_abbrev(const char *text, size_t start, size_t end) {
    size_t b = end;
    while (b > start && !isspace((unsigned char)text[b - 1]) && !strchr("()\"'", text[b - 1])) b--;
    size_t n = end - b;
    if (n == 0) return 0;
    if (n == 1 && isupper((unsigned char)text[b])) return 1; /* an initial */
    char w[16];
    if (n >= sizeof w) return 0;
    for (size_t i = 0; i < n; i++) w[i] = (char)tolower((unsigned char)text[b + i]);
    w[n] = 0;
    for (size_t i = 0; i < sizeof ABBREV / sizeof ABBREV[0]; i++)
        if (!strcmp(w, ABBREV[i])) return 1;
    return 0;
}

static int opens_sentence(unsigned char c) { return isupper(c) || isdigit(c) || c == '"' || c == '\'' || c == '(' || c >= 0x80; }

size_t met_sentences(const char *text, int (*fn)(void *user, const char *s, size_t len), void *user) {
    size_t n = strlen(text), start = 0, count = 0;
    for (size_t i = 0; i <= n; i++) {
        size_t end = 0; /* one past the sentence's last character, when one ends here */
        size_t next = i + 1;
        if (i == n) end = n;
        else if (text[i] == '\n' && i + 1 < n && text[i + 1] == '\n') end = i; /* a blank line */
        else if (text[i] == '.' || text[i] == '!' || text[i] == '?') {
            size_t j = i + 1;
            while (j < n && (text[j] == '.' || text[j] == '!' || text[j] == '?')) j++; /* "?!" "..." */
            while (j < n && (text[j] == '"' || text[j] == '\'' || text[j] == ')' || text[j] == ']')) j++;
            size_t k = j;
            while (k < n && isspace((unsigned char)text[k])) k++;
            if (k > j && (k == n || opens_sentence((unsigned char)text[k])) &&
                !(text[i] == '.' && j == i + 1 && is_abbrev(text, start, i))) {
                end = j;
                next = k;
            } else {
                i = j - 1;
                continue;
            }
        } else continue;
        size_t a = start, b = end;
        while (a < b && isspace((unsigned char)text[a])) a++;
        while (b > a && isspace((unsigned char)text[b - 1])) b--;
        if (b > a) {
            count++;
            if (fn && fn(user, text + a, b - a)) return count;
        }
        start = next;
        i = next - 1;
    }
    return count;
}
