/* hash.h - the 64-bit FNV-1a hash (Fowler, Noll, Vo) the project keys
 * things with: a run's id (the hash of its spec), a sample's seed, the
 * bootstrap's seed, RULER's per-task seeds, ROUGE's token table.
 *
 * The value is stored (run ids in results databases, seeds behind stored
 * samples), so it must never change. A model file's identity is another
 * hash (XXH3-128 of its bytes, harness/identity.c). */
#ifndef KV_HASH_H
#define KV_HASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV's 64-bit offset basis: the usual start. */
#define KV_FNV1A64_INIT 0xcbf29ce484222325ull

/* FNV-1a over n bytes, continuing from h (start with KV_FNV1A64_INIT), so a
 * hash of several pieces is a chain of calls. */
uint64_t kv_fnv1a64(uint64_t h, const void *data, size_t n);

#endif
