/* paths.h - where kvbench finds models and data.
 *
 * A relative model path that does not exist as given is looked up under
 * $KVBENCH_MODELS, and data paths under $KVBENCH_DATA. When those are
 * unset, the defaults are the shared/ folders beside the source tree the
 * binary was built from (KVBENCH_DEFAULT_MODELS / _DATA, set by meson), so
 * `kvbench generate --model stories260K/stories260K.bin` works from a
 * fresh clone. */
#ifndef HX_PATHS_H
#define HX_PATHS_H

#include <stddef.h>

const char *hx_models_dir(void);
const char *hx_data_dir(void);

/* Resolves `path` (a file, or a path relative to the models/data folder)
 * into buf. Returns buf; if nothing exists, buf holds `path` unchanged so
 * the loader's error names what the user typed. */
const char *hx_resolve_model(const char *path, char *buf, size_t cap);
const char *hx_resolve_data(const char *path, char *buf, size_t cap);

/* $KVBENCH_WEIGHTS: how model files are held, "copy" (the default: read
 * into 2 MB huge pages, faster decode) or "mmap" (mapped from the page
 * cache, no copy: a model close to the machine's memory). Sets
 * *weights_mmap (kv_model_params); KV_EINVAL with a message for any other
 * value. */
int hx_weights_mmap(int *weights_mmap);

#endif
