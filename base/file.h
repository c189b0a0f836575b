/* file.h - a whole file read into memory (JSON, CSV, vocabularies, texts).
 * Model weights are not read this way: engine/filemap.h maps or copies them. */
#ifndef KV_FILE_H
#define KV_FILE_H

#include <stddef.h>

/* Reads the file at `path` whole into a malloc'd buffer with a NUL after its
 * bytes (text parses in place; the bytes themselves may hold NULs). *len
 * gets the byte count (len may be NULL). Any file that reads to its end
 * works, a pipe too. Returns KV_OK, or KV_EIO / KV_ENOMEM with *out NULL
 * and a message naming the file and what failed. */
int kv_read_file(const char *path, char **out, size_t *len);

#endif
