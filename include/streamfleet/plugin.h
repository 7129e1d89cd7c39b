/* streamfleet/plugin.h: the ABI of a C handler that runs inside a streamfleet worker
 * (`handler = plugin`, `plugin = /path/NAME.so`). Public and self-contained: a plugin
 * includes this file alone and never sees streamfleet's own types.
 *
 * A plugin is a shared object that exports one symbol, `streamfleet_plugin`, a const struct
 * sf_plugin whose first member is the ABI version it was built against:
 *
 *     #include <streamfleet/plugin.h>
 *     static int my_init(const struct sf_host *, const struct sf_param *, size_t, void **,
 *                        char *, size_t);
 *     static int my_handle(void *, const struct sf_message *, struct sf_answer *,
 *                          struct sf_call *);
 *     const struct sf_plugin streamfleet_plugin = {
 *         .abi = STREAMFLEET_PLUGIN_ABI, .name = "mine", .init = my_init, .handle = my_handle,
 *     };
 *
 * Each worker loads the plugin after fork() (dlopen with RTLD_NOW | RTLD_LOCAL), refuses an
 * ABI version other than its own, calls init() once, handle() for each message, and fini()
 * when it exits. Everything runs on the worker's one thread, inside its poll() loop: a
 * handle() that blocks stops the worker (the supervisor kills a worker silent for
 * heartbeat_timeout). A plugin that needs to wait (a socket, a timer) answers "pending" and
 * gives its descriptors to the worker through fds()/run().
 *
 * Nothing isolates the plugin from the worker: a crash in it is the worker's crash. The
 * supervisor replaces the worker (with a growing delay when it keeps dying soon after start),
 * and the message it held stays pending in Redis and is delivered again after claim_idle.
 *
 * The ABI version changes whenever any struct or function below changes in a way an already
 * built plugin would notice; a plugin built for another version is refused at load. */
#ifndef STREAMFLEET_PLUGIN_H
#define STREAMFLEET_PLUGIN_H

#include <poll.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STREAMFLEET_PLUGIN_ABI 1
/* The name of the symbol the worker looks up with dlsym(). */
#define STREAMFLEET_PLUGIN_SYMBOL "streamfleet_plugin"

/* Bytes that may hold anything, NULs included. p[len] is always '\0' (Redis bulk strings are
 * NUL-terminated), so a text value can be used as a C string when it has no NUL inside. */
struct sf_bytes {
    const char *p;
    size_t len;
};

/* One `plugin.KEY = value` line of the pool's section ("plugin." taken off the key), in the
 * order of the file. A key may repeat. Valid during init() only: copy what you keep. */
struct sf_param {
    const char *key;
    const char *value;
};

/* The message being handled. It and everything it points to are valid only during the
 * handle() call: a plugin that answers later copies what it needs. */
struct sf_message {
    const char *pool;               /* the [pool:NAME] */
    const char *stream;
    const char *id;                 /* the stream entry id, "1700000000000-0" */
    long long attempt;              /* this delivery's number, 1 on the first */
    const struct sf_bytes *fields;  /* name, value, name, value, ... (2 * nfields entries) */
    size_t nfields;                 /* number of name/value pairs */
};

enum sf_result {
    SF_ACK = 0,         /* handled: acknowledged */
    SF_RETRY = 1,       /* failed for now: tried again after the pool's backoff (or retry_after) */
    SF_DEAD = 2,        /* failed for good: moved to the dead-letter stream at once */
    SF_PENDING = 3,     /* (handle() only) the answer comes later through host->done() */
};

/* What became of a message. handle() gets one with defaults filled in (no reason, no error,
 * retry_after_ms -1); the strings need live only until handle() or done() returns. */
struct sf_answer {
    enum sf_result result;          /* for done(): SF_ACK, SF_RETRY or SF_DEAD */
    const char *reason;             /* SF_DEAD: the dead letter's reason, up to 31 characters
                                     * of [a-z0-9_]; NULL: "plugin_rejected" */
    const char *error;              /* SF_RETRY, SF_DEAD: a short text for the log, the status
                                     * page and the dead letter; NULL: none */
    long retry_after_ms;            /* SF_RETRY: wait this long (capped by backoff_max);
                                     * -1: the pool's backoff */
};

/* An asynchronous message's handle: opaque, valid from the handle() that answered
 * SF_PENDING until the host->done() call for it returns. */
struct sf_call;

/* What the worker offers the plugin, given to init(); valid until fini() returns. */
struct sf_host {
    unsigned abi;                   /* the worker's STREAMFLEET_PLUGIN_ABI */
    /* Report the answer for call, exactly once per SF_PENDING. Only from inside handle() or
     * run() (never from another thread, a signal handler, init() or fini()); it calls
     * nothing of the plugin back. */
    void (*done)(struct sf_call *call, const struct sf_answer *a);
    /* Write a line to the worker's log, tagged with the pool and worker. level: 0 debug,
     * 1 info, 2 warning, 3 error. */
    void (*log)(int level, const char *text);
};

struct sf_plugin {
    unsigned abi;                   /* STREAMFLEET_PLUGIN_ABI: first, always */
    const char *name;               /* for messages; may be NULL */
    /* Build the plugin's state from its parameters. Returns 0 with *state set (NULL is a fine
     * state), or -1 with a reason in err (a NUL-terminated text of at most errlen bytes).
     * Required. */
    int (*init)(const struct sf_host *host, const struct sf_param *params, size_t nparams,
                void **state, char *err, size_t errlen);
    /* Handle message m. Either decide at once: fill *a (reason, error, retry_after_ms) and
     * return SF_ACK, SF_RETRY or SF_DEAD; or return SF_PENDING, keep call, and later pass it
     * with the answer to host->done(). Must not block. Required. */
    int (*handle)(void *state, const struct sf_message *m, struct sf_answer *a,
                  struct sf_call *call);
    /* Asynchronous plugins: add the descriptors to wait on to pfd (at most max; events set)
     * and lower *timeout_ms to the plugin's next deadline; returns how many it added. The
     * worker calls it before each poll(). Optional. */
    int (*fds)(void *state, struct pollfd *pfd, int max, long *timeout_ms);
    /* Called after each poll() with what fds() added (revents filled in; n may be 0): do the
     * work that is ready, and report answers through host->done(). Optional. */
    void (*run)(void *state, const struct pollfd *pfd, int n);
    /* Free the state. Called once when the worker exits; calls still pending are abandoned:
     * their messages stay pending in Redis and are delivered again. Optional. */
    void (*fini)(void *state);
};

#ifdef __cplusplus
}
#endif

#endif
