/* sign.h: Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over
 * "msg_id.timestamp.body", base64, sent as "webhook-signature: v1,<base64>". The only file
 * that includes OpenSSL is sign.c.
 *
 * The key is a secret: it lives in one place (struct sign), is never logged, and is wiped
 * when released. */
#ifndef SF_SIGN_H
#define SF_SIGN_H

#include <stddef.h>

#include "common/buf.h"

struct sign;

/* Read the secret from path: trailing whitespace and newlines are trimmed, and a secret
 * written "whsec_<base64>" is base64-decoded into the key (else its bytes are the key).
 * Returns a new signer (free with sign_free()), or NULL with the reason in err. */
struct sign *sign_open_file(const char *path, char *err, size_t errlen);
/* The same from a secret in memory (s[0..n), not trimmed). Returns NULL with the reason in
 * err. The caller still owns (and wipes) s. */
struct sign *sign_open(const char *s, size_t n, char *err, size_t errlen);
/* Wipe the key and free the signer. NULL is fine. */
void sign_free(struct sign *sg);

/* Append "v1,<base64 HMAC-SHA256 of id.timestamp.body>" to out. Returns 0, or -1 when the
 * crypto library fails (out is then unchanged). */
int sign_webhook(struct sign *sg, const char *id, size_t idlen, long long timestamp,
                 const void *body, size_t bodylen, struct buf *out);

#endif
