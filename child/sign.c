/* sign.c: Standard Webhooks signing with OpenSSL 3's EVP_MAC. See sign.h. */
#include "child/sign.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define SECRET_FILE_MAX 4096
#define WHSEC "whsec_"

struct sign {
    unsigned char *key;
    size_t len;
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx;
};

void sign_free(struct sign *sg)
{
    if (sg == NULL)
        return;
    EVP_MAC_CTX_free(sg->ctx);     /* OpenSSL cleanses the key copy it holds */
    EVP_MAC_free(sg->mac);
    if (sg->key) {
        OPENSSL_cleanse(sg->key, sg->len);
        free(sg->key);
    }
    free(sg);
}

/* Decode base64 s[0..n) (padding optional) into a new buffer of *outlen bytes. NULL when it
 * is not base64. The caller wipes and frees the result. */
static unsigned char *b64_decode(const char *s, size_t n, size_t *outlen)
{
    /* EVP_DecodeBlock wants whole quads: pad what a writer may have left unpadded. */
    size_t padded = (n + 3) / 4 * 4;
    if (n == 0 || padded - n > 2)
        return NULL;
    char *in = xmalloc(padded + 1);
    memcpy(in, s, n);
    memset(in + n, '=', padded - n);
    in[padded] = '\0';
    size_t pad = 0;
    while (pad < 2 && in[padded - 1 - pad] == '=')
        pad++;
    unsigned char *out = xmalloc(padded / 4 * 3 + 1);
    int r = EVP_DecodeBlock(out, (const unsigned char *)in, (int)padded);
    OPENSSL_cleanse(in, padded);
    free(in);
    /* EVP_DecodeBlock counts the padding as zero bytes: take them off again. */
    if (r < 0 || (size_t)r < pad || (size_t)r - pad == 0) {
        OPENSSL_cleanse(out, padded / 4 * 3 + 1);
        free(out);
        return NULL;
    }
    *outlen = (size_t)r - pad;
    return out;
}

struct sign *sign_open(const char *s, size_t n, char *err, size_t errlen)
{
    struct sign *sg = xcalloc(1, sizeof *sg);
    if (n >= strlen(WHSEC) && memcmp(s, WHSEC, strlen(WHSEC)) == 0) {
        sg->key = b64_decode(s + strlen(WHSEC), n - strlen(WHSEC), &sg->len);
        if (sg->key == NULL) {
            snprintf(err, errlen, "a secret starting with %s must continue in base64", WHSEC);
            goto fail;
        }
    } else {
        if (n == 0) {
            snprintf(err, errlen, "the secret is empty");
            goto fail;
        }
        sg->key = xmalloc(n);
        memcpy(sg->key, s, n);
        sg->len = n;
    }
    sg->mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    if (sg->mac == NULL || (sg->ctx = EVP_MAC_CTX_new(sg->mac)) == NULL) {
        snprintf(err, errlen, "openssl has no HMAC");
        goto fail;
    }
    return sg;
fail:
    sign_free(sg);
    return NULL;
}

struct sign *sign_open_file(const char *path, char *err, size_t errlen)
{
    struct sign *sg = NULL;
    char *s = xmalloc(SECRET_FILE_MAX + 1);
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd == -1) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, s + n, SECRET_FILE_MAX + 1 - n);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > SECRET_FILE_MAX) {
            snprintf(err, errlen, "%s is longer than %d bytes: not a secret", path, SECRET_FILE_MAX);
            goto out;
        }
    }
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    char why[200];
    sg = sign_open(s, n, why, sizeof why);
    if (sg == NULL)
        snprintf(err, errlen, "%s: %s", path, why);
out:
    if (fd != -1)
        close(fd);
    OPENSSL_cleanse(s, SECRET_FILE_MAX + 1);
    free(s);
    return sg;
}

int sign_webhook(struct sign *sg, const char *id, size_t idlen, long long timestamp,
                 const void *body, size_t bodylen, struct buf *out)
{
    char ts[32];
    int tslen = snprintf(ts, sizeof ts, ".%lld.", timestamp);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    if (!EVP_MAC_init(sg->ctx, sg->key, sg->len, params) ||
        !EVP_MAC_update(sg->ctx, (const unsigned char *)id, idlen) ||
        !EVP_MAC_update(sg->ctx, (const unsigned char *)ts, (size_t)tslen) ||
        !EVP_MAC_update(sg->ctx, body, bodylen) ||
        !EVP_MAC_final(sg->ctx, mac, &maclen, sizeof mac))
        return -1;
    char b64[(EVP_MAX_MD_SIZE + 2) / 3 * 4 + 1];
    int n = EVP_EncodeBlock((unsigned char *)b64, mac, (int)maclen);
    buf_adds(out, "v1,");
    buf_add(out, b64, (size_t)n);
    return 0;
}
