/* notify.h: systemd's readiness protocol (sd_notify), without libsystemd: a datagram to the
 * socket in $NOTIFY_SOCKET. Does nothing when not started by systemd with Type=notify. */
#ifndef SF_NOTIFY_H
#define SF_NOTIFY_H

/* Send state ("READY=1", "RELOADING=1", "STOPPING=1", "STATUS=..."). Errors are ignored:
 * a supervisor that cannot tell systemd must still run. */
void notify(const char *state);

#endif
