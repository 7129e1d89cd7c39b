/* notify.c: sd_notify's datagram, as systemd documents it (sd_notify(3), "NOTIFY_SOCKET"). */
#include "supervisor/notify.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

void notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    if (n >= sizeof sa.sun_path)
        return;
    memcpy(sa.sun_path, path, n);
    if (sa.sun_path[0] == '@')          /* abstract namespace */
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return;
    char msg[256];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* systemd 253+ wants the time of a reload in MONOTONIC_USEC beside RELOADING=1. */
    if (strcmp(state, "RELOADING=1") == 0)
        snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%lld",
                 (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    else
        snprintf(msg, sizeof msg, "%s", state);
    sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(fd);
}
