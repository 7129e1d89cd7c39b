#!/bin/sh
# An exec handler (handler = exec): streamfleet runs it once per message, the message as one
# JSON object on stdin: {"pool":..,"stream":..,"id":..,"attempt":N,"fields":{..}}.
# Exit 0: done (acked). Exit 65: the message is bad (dead-lettered at once). Anything else,
# 75 for instance: try again later. The last line on stderr says why.
#
#   [pool:emails]
#   handler = exec
#   command = /srv/handlers/exec.sh
#   env = SENT_LOG=/var/log/sent.log
set -eu
msg=$(cat)
to=$(printf '%s' "$msg" | jq -r '.fields.to // empty')
if [ -z "$to" ]; then
    echo "message $STREAMFLEET_ID has no 'to' field" >&2
    exit 65
fi
# The work: here, append the recipient to a file (a real handler would send the email).
printf '%s\n' "$to" >> "${SENT_LOG:-/dev/null}" || { echo "cannot write $SENT_LOG" >&2; exit 75; }
