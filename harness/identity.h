/* identity.h - a model file's identity: the XXH3-128 hash of all its bytes.
 *
 * Runs are keyed by it, so two files that differ anywhere (two
 * re-quantizations of one model that differ only in the middle) never share
 * results. */
#ifndef HX_IDENTITY_H
#define HX_IDENTITY_H

/* Hex digits of an identity, and the buffer it needs. */
enum { HX_IDENTITY_HEX = 32, HX_IDENTITY_BUF = HX_IDENTITY_HEX + 1 };

/* Hashes every byte of the file at path with XXH3-128 (seed 0) and writes
 * 32 lowercase hex digits and a NUL into hex: the canonical (big-endian)
 * form, what `xxh128sum` prints. 0, or KV_EIO / KV_ENOMEM with a message
 * naming the file (and the offset of a failed read). */
int hx_file_identity(const char *path, char hex[HX_IDENTITY_BUF]);

#endif
