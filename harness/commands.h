/* commands.h - kvbench's subcommands. Each takes the arguments after its
 * name and returns the process exit status; with help != 0 it prints its
 * usage and options instead. */
#ifndef HX_COMMANDS_H
#define HX_COMMANDS_H

#include "../engine/dtype.h"
#include "../engine/export.h"

int hx_cmd_info(int argc, char **argv, int help);
int hx_cmd_tokenize(int argc, char **argv, int help);
int hx_cmd_generate(int argc, char **argv, int help);
int hx_cmd_logits(int argc, char **argv, int help);
int hx_cmd_perplexity(int argc, char **argv, int help);
int hx_cmd_bench(int argc, char **argv, int help);
int hx_cmd_convert(int argc, char **argv, int help);
int hx_cmd_synth(int argc, char **argv, int help);
int hx_cmd_list(int argc, char **argv, int help);
int hx_cmd_run(int argc, char **argv, int help);
int hx_cmd_report(int argc, char **argv, int help);
int hx_cmd_plot(int argc, char **argv, int help);
int hx_cmd_merge(int argc, char **argv, int help);
int hx_cmd_score(int argc, char **argv, int help);
int hx_cmd_chat(int argc, char **argv, int help);

/* convert's and synth's --type: a stored type or a mixed recipe (q4_k_m,
 * q5_k_m); prints the error for `cmd` and returns 2 when unknown. */
#define TYPE_LIST "f32, f16, bf16, q8_0, q4_0, q2_k, q3_k, q4_k, q5_k, q6_k, q4_k_m or q5_k_m"
int hx_parse_weight_type(const char *cmd, const char *name, kv_dtype *type, kv_quant_mix *mix);

#endif
