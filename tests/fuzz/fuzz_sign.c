// links: child/sign.c
/* fuzz_sign.c: Standard Webhooks signing over arbitrary bytes.
 *
 * Input: one byte each of secret length and id length (the rest is the body), then the
 * secret, the id and the body. A secret that is refused must say why; an accepted one signs
 * as "v1," and 44 characters of base64, the same twice over. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "child/sign.h"
#include "common/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t slen = data[0], idlen = data[1];
    data += 2;
    size -= 2;
    if (slen > size)
        slen = size;
    if (idlen > size - slen)
        idlen = size - slen;
    const char *secret = (const char *)data, *id = secret + slen, *body = id + idlen;
    size_t bodylen = size - slen - idlen;

    char err[256] = "";
    struct sign *sg = sign_open(secret, slen, err, sizeof err);
    if (sg == NULL) {
        if (err[0] == '\0')
            abort();
        return 0;
    }
    struct buf a = BUF_INIT, b = BUF_INIT;
    if (sign_webhook(sg, id, idlen, 1700000000, body, bodylen, &a) != 0 ||
        sign_webhook(sg, id, idlen, 1700000000, body, bodylen, &b) != 0)
        abort();
    if (a.len != 3 + 44 || memcmp(a.p, "v1,", 3) != 0 || b.len != a.len || memcmp(a.p, b.p, a.len) != 0)
        abort();
    buf_release(&a);
    buf_release(&b);
    sign_free(sg);
    return 0;
}
