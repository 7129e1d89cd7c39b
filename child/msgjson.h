/* msgjson.h: a message as JSON text, for the handlers that hand it on (http's body, the
 * input of exec and subprocess). */
#ifndef SF_MSGJSON_H
#define SF_MSGJSON_H

#include <stdbool.h>

#include "child/msg.h"
#include "common/buf.h"

/* Append a JSON object of every field of m, in order; a repeated name keeps its first value
 * (as msg_get() does), so receivers never see duplicate keys. Values that are not valid
 * UTF-8: with base64, as {"$base64":"..."} (the bytes round-trip exactly); without, their
 * stray bytes as \u00XX (buf_add_json_str()). Names are always strings. */
void msgjson_fields(struct buf *b, const struct msg *m, bool base64);
/* Append s[0..n) in standard base64 with padding. */
void msgjson_base64(struct buf *b, const char *s, size_t n);

#endif
