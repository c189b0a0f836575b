/* fuzz_experiment.c - any bytes, as an experiment INI file, are accepted or
 * refused with an error by hx_experiment_load (inih's parser, the
 * line-counting reader, key and range checks, $VAR expansion, budget
 * lists, policy settings through the registry), never crashing. An
 * accepted experiment must be consistent: its sweep indexes name defined
 * items and every count is within its array.
 * Files the INI names resolve under $KVBENCH_MODELS and $KVBENCH_DATA (the
 * test suite sets them to ../shared), so the seeds name files that exist.
 * Corpus: tests/fuzz/corpus/fuzz_experiment/ (shipped experiments' shapes,
 * every task kind, and malformed lines). */
#define _DEFAULT_SOURCE
#include <stdlib.h>
#include <unistd.h>

#include "experiment.h"
#include "fuzz_util.h"

static void fz_check_sweep(const int *idx, int n, int n_defined) {
    if (n < 0 || n > HX_MAX_ITEMS) abort();
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= n_defined) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static hx_experiment e; /* large: 64 of each item */
    char path[4200];
    fz_path(path, sizeof path, "experiment.ini");
    if (fz_write(path, data, size)) return 0;
    fz_quiet(); /* warnings go to stderr */
    int rc = hx_experiment_load(path, &e);
    fz_unquiet();
    if (rc == 0) {
        if (e.n_models > HX_MAX_ITEMS || e.n_tasks > HX_MAX_ITEMS || e.n_policies > HX_MAX_ITEMS ||
            e.n_budgets < 0 || e.n_budgets > HX_MAX_ITEMS)
            abort();
        fz_check_sweep(e.sweep_model, e.n_sweep_models, e.n_models);
        fz_check_sweep(e.sweep_task, e.n_sweep_tasks, e.n_tasks);
        fz_check_sweep(e.sweep_policy, e.n_sweep_policies, e.n_policies);
        hx_experiment_free(&e);
    }
    unlink(path);
    return 0;
}
