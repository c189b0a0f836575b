/* cmd_list.c - `kvbench list policies`: the registry with each policy's
 * parameter table (name, default, range, meaning). */
#include <stdio.h>
#include <string.h>

#include "../policies/policy.h"
#include "commands.h"

int hx_cmd_list(int argc, char **argv, int help) {
    if (help) {
        printf("usage: kvbench list policies\n\nLists the KV cache policies and their parameters.\n"
               "Parameters are set with --set name=value,... where a policy is chosen.\n");
        return 0;
    }
    if (argc != 1 || strcmp(argv[0], "policies") != 0) {
        fprintf(stderr, "kvbench list: expected 'policies'\n");
        return 2;
    }
    pol_print_all();
    return 0;
}
