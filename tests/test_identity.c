/* test_identity.c - a model file's identity (harness/identity.c): XXH3-128
 * of every byte, so files that differ anywhere - here one byte in the middle
 * of two sparse 300 MiB files, where the old first-and-last-16-MiB hash
 * never looked - get different identities, and equal files the same. */
#include "test_util.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "kv_error.h"
#include "../harness/identity.h"

enum { BIG = 300 << 20 }; /* over 256 MiB: the old hash sampled only its ends */

/* A sparse file of BIG bytes, zero but for `byte` at offset `at`. */
static void make_sparse(const char *path, off_t at, unsigned char byte) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, BIG), 0);
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    assert_int_equal(close(fd), 0);
}

static void test_middle_byte_changes_identity(void **state) {
    (void)state;
    char dir[64], a[128], b[128], c[128];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(a, sizeof a, "%s/a.bin", dir);
    snprintf(b, sizeof b, "%s/b.bin", dir);
    snprintf(c, sizeof c, "%s/c.bin", dir);
    make_sparse(a, BIG / 2, 1);
    make_sparse(b, BIG / 2, 2);
    make_sparse(c, BIG / 2, 1);
    char ha[HX_IDENTITY_BUF], hb[HX_IDENTITY_BUF], hc[HX_IDENTITY_BUF];
    assert_int_equal(hx_file_identity(a, ha), KV_OK);
    assert_int_equal(hx_file_identity(b, hb), KV_OK);
    assert_int_equal(hx_file_identity(c, hc), KV_OK);
    tu_rmdir(dir);
    assert_int_equal(strlen(ha), HX_IDENTITY_HEX);
    assert_int_equal(strspn(ha, "0123456789abcdef"), HX_IDENTITY_HEX);
    assert_string_not_equal(ha, hb); /* one byte in the middle */
    assert_string_equal(ha, hc);     /* the same bytes, another file */
}

/* The canonical form, as xxh128sum prints it: XXH3-128 of no bytes is
 * 99aa06d3014798d86001c324468d497f (xxHash's published test vector), and
 * of "abc" 06b05ab6733a618578af5f94892f3950. */
static void test_known_vectors(void **state) {
    (void)state;
    char dir[64], p[128], h[HX_IDENTITY_BUF];
    assert_non_null(tu_mkdtemp(dir, sizeof dir));
    snprintf(p, sizeof p, "%s/empty", dir);
    assert_int_equal(tu_write(p, "", 0), 0);
    assert_int_equal(hx_file_identity(p, h), KV_OK);
    assert_string_equal(h, "99aa06d3014798d86001c324468d497f");
    assert_int_equal(tu_write(p, "abc", 3), 0);
    assert_int_equal(hx_file_identity(p, h), KV_OK);
    assert_string_equal(h, "06b05ab6733a618578af5f94892f3950");
    tu_rmdir(dir);
}

static void test_missing_file_is_named(void **state) {
    (void)state;
    char h[HX_IDENTITY_BUF];
    assert_int_equal(hx_file_identity("/nonexistent/model.gguf", h), KV_EIO);
    assert_non_null(strstr(kv_last_error(), "/nonexistent/model.gguf"));
    assert_int_equal(hx_file_identity("/", h), KV_EIO); /* a folder: the read fails, naming it */
    assert_non_null(strstr(kv_last_error(), "/: offset 0"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_middle_byte_changes_identity),
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_missing_file_is_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
