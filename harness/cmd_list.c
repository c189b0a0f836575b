/* cmd_list.c - `kvbench list policies|templates`: the policy registry with
 * each policy's parameter table (name, default, range, meaning), and the
 * named, versioned prompt templates. */
#include <stdio.h>
#include <string.h>

#include "../datasets/template.h"
#include "../policies/policy.h"
#include "commands.h"

static void print_templates(void) {
    for (int i = 0; i < ds_template_count(); i++) {
        const ds_template *t = ds_template_at(i);
        printf("%s@%d  (%s tasks; cuts {%s} to fit)  %s\n  ", t->name, t->version, t->kind, t->cut, t->summary);
        for (const char *p = t->text; *p; p++) {
            if (*p == '\n') printf("\\n\n  ");
            else putchar(*p);
        }
        printf("\n\n");
    }
}

int hx_cmd_list(int argc, char **argv, int help) {
    if (help) {
        printf("usage: kvbench list policies|templates\n\nLists the KV cache policies and their parameters\n"
               "(set with --set name=value,... or in an experiment's [policy] section), or the\n"
               "prompt templates an experiment's task can name.\n");
        return 0;
    }
    if (argc == 1 && strcmp(argv[0], "policies") == 0) pol_print_all();
    else if (argc == 1 && strcmp(argv[0], "templates") == 0) print_templates();
    else {
        fprintf(stderr, "kvbench list: expected 'policies' or 'templates'\n");
        return 2;
    }
    return 0;
}
