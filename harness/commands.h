/* commands.h - kvbench's subcommands. Each takes the arguments after its
 * name and returns the process exit status; with help != 0 it prints its
 * usage and options instead. */
#ifndef HX_COMMANDS_H
#define HX_COMMANDS_H

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

#endif
