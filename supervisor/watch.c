/* watch.c: which files a pool's handlers run, and inotify on them, in the master.
 *
 * Each file is watched through its DIRECTORY, filtered by name: an editor (vim, emacs, most
 * IDEs) or `cp`/`install` often replaces a file by writing a temporary and renaming it over
 * the old name, and a watch on the old inode would see nothing of that (its inode is simply
 * unlinked). One inotify descriptor serves every pool; inotify gives one watch descriptor per
 * directory, shared by the files and pools that live there. The master only reads events and
 * keeps deadlines: the replacement itself is master.c's (a reload's new generation). */
#include "supervisor/watch.h"
#include "common/buf.h"
#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ATTRIB | IN_DELETE)

/* One file of one pool. */
struct watched {
    size_t pool;                /* index into watch.pools */
    char *path;                 /* as shown in the log */
    char *dir, *name;           /* what inotify is told, and the name events are matched by */
    int wd;                     /* -1: its directory could not be watched */
};

struct watch_pool {
    char *name;
    long long due_ms;           /* 0: no change waiting */
    char *changed;              /* the path that changed last, for the log; NULL: none */
};

struct watch {
    int fd;                     /* -1 until a pool asks */
    struct watched *files;
    size_t nfiles;
    struct watch_pool *pools;
    size_t npools;
};

struct watch *watch_open(void)
{
    struct watch *w = xcalloc(1, sizeof *w);
    w->fd = -1;
    return w;
}

static void forget(struct watch *w)
{
    for (size_t i = 0; i < w->nfiles; i++) {
        /* Directories shared by several files have one wd: removing it again fails with
         * EINVAL, which is harmless. */
        if (w->files[i].wd >= 0)
            inotify_rm_watch(w->fd, w->files[i].wd);
        free(w->files[i].path);
        free(w->files[i].dir);
        free(w->files[i].name);
    }
    free(w->files);
    w->files = NULL;
    w->nfiles = 0;
}

void watch_free(struct watch *w)
{
    if (w == NULL)
        return;
    forget(w);
    for (size_t i = 0; i < w->npools; i++) {
        free(w->pools[i].name);
        free(w->pools[i].changed);
    }
    free(w->pools);
    if (w->fd >= 0)
        close(w->fd);
    free(w);
}

int watch_fd(const struct watch *w)
{
    return w->nfiles > 0 ? w->fd : -1;
}

static bool regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* name as execvp() finds it: as it is when it has a slash, else the first executable regular
 * file of that name in PATH. Caller frees; NULL when there is none. */
static char *program_path(const char *name)
{
    if (strchr(name, '/'))
        return xstrdup(name);
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    struct buf b = BUF_INIT;
    for (const char *d = path;;) {
        size_t n = strcspn(d, ":");
        buf_reset(&b);
        buf_printf(&b, "%.*s/%s", (int)n, n ? d : ".", name);
        if (regular_file(b.p) && access(b.p, X_OK) == 0)
            return b.p;
        if (d[n] == '\0')
            break;
        d += n + 1;
    }
    buf_release(&b);
    return NULL;
}

static void add_file(struct watch *w, size_t pool, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash && slash[1] == '\0')
        return;
    for (size_t i = 0; i < w->nfiles; i++)
        if (w->files[i].pool == pool && strcmp(w->files[i].path, path) == 0)
            return;
    struct watched f = { .pool = pool, .path = xstrdup(path) };
    f.dir = slash == NULL ? xstrdup(".") : slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
    f.name = xstrdup(slash ? slash + 1 : path);
    f.wd = inotify_add_watch(w->fd, f.dir, WATCH_MASK);
    if (f.wd == -1)
        log_warn("watch: pool %s: cannot watch %s (its directory %s)", w->pools[pool].name, path, f.dir);
    else
        log_debug("watch: pool %s: watching %s", w->pools[pool].name, path);
    w->files = xrealloc(w->files, (w->nfiles + 1) * sizeof *w->files);
    w->files[w->nfiles++] = f;
}

/* shell = yes: the words of the command that name existing files, the first one looked up in
 * PATH too. Best effort: the command is cut at blanks, quotes and the shell's operators,
 * nothing is expanded. */
static void add_shell_words(struct watch *w, size_t pool, const char *command)
{
    static const char seps[] = " \t\n;|&<>()`'\"";
    bool first = true;
    for (const char *s = command; *s;) {
        size_t n = strcspn(s, seps);
        if (n > 0) {
            char *word = xstrndup(s, n);
            char *prog = first && !strchr(word, '/') ? program_path(word) : NULL;
            if (prog)
                add_file(w, pool, prog);
            else if (regular_file(word))
                add_file(w, pool, word);
            free(prog);
            free(word);
            first = false;
        }
        s += n;
        if (*s)
            s++;
    }
}

/* The files of one handler config (an inline pool or one target of a routed pool). */
static void add_handler(struct watch *w, size_t pool, const struct pool_conf *p)
{
    if (p->handler == HANDLER_PLUGIN && p->plugin) {
        add_file(w, pool, p->plugin);
    } else if ((p->handler == HANDLER_EXEC || p->handler == HANDLER_SUBPROCESS) && p->argv && p->argv[0]) {
        if (p->shell) {
            add_shell_words(w, pool, p->command);
            return;
        }
        char *prog = program_path(p->argv[0]);
        if (prog)
            add_file(w, pool, prog);
        free(prog);
        /* `python3 /srv/handler.py`: the script is what its author edits */
        for (size_t i = 1; p->argv[i]; i++)
            if (regular_file(p->argv[i]))
                add_file(w, pool, p->argv[i]);
    }
}

void watch_set(struct watch *w, const struct conf *c)
{
    forget(w);
    /* Keep the pools still watched (a change may be waiting), drop the others. */
    size_t kept = 0;
    for (size_t i = 0; i < w->npools; i++) {
        const struct pool_conf *pc = conf_pool(c, w->pools[i].name);
        if (pc && pc->watch) {
            w->pools[kept++] = w->pools[i];
        } else {
            free(w->pools[i].name);
            free(w->pools[i].changed);
        }
    }
    w->npools = kept;
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool_conf *pc = &c->pools[i];
        if (!pc->watch)
            continue;
        if (w->fd == -1 && (w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) == -1) {
            log_warn("watch: inotify_init1: pools with watch = yes are not watched");
            return;
        }
        size_t k = 0;
        while (k < w->npools && strcmp(w->pools[k].name, pc->name) != 0)
            k++;
        if (k == w->npools) {
            w->pools = xrealloc(w->pools, (w->npools + 1) * sizeof *w->pools);
            w->pools[w->npools++] = (struct watch_pool){ .name = xstrdup(pc->name) };
        }
        size_t before = w->nfiles;
        if (pc->routed)
            for (size_t t = 0; t < pc->ntargets; t++)
                add_handler(w, k, &pc->targets[t]);
        else
            add_handler(w, k, pc);
        if (w->nfiles == before)
            log_warnx("watch: pool %s: none of its handlers runs a file that can be watched", pc->name);
    }
}

static void make_due(struct watch *w, size_t pool, const char *path, long long now)
{
    w->pools[pool].due_ms = now + WATCH_SETTLE_MS;
    free(w->pools[pool].changed);
    w->pools[pool].changed = xstrdup(path);
}

void watch_read(struct watch *w, long long now)
{
    /* inotify(7): the buffer must be aligned for struct inotify_event. */
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = w->fd >= 0 ? read(w->fd, buf, sizeof buf) : -1;
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == -1 && errno != EAGAIN)
                log_warn("watch: read from inotify");
            return;
        }
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                /* Events were dropped: any file may have changed. */
                log_warnx("watch: inotify queue overflow: replacing the workers of every watched pool");
                for (size_t k = 0; k < w->npools; k++)
                    make_due(w, k, "(inotify queue overflow)", now);
                continue;
            }
            if (ev->len == 0)
                continue;               /* about the directory itself (IN_IGNORED, ...) */
            for (size_t i = 0; i < w->nfiles; i++) {
                const struct watched *f = &w->files[i];
                if (f->wd == ev->wd && strcmp(f->name, ev->name) == 0) {
                    log_debug("watch: %s changed (mask 0x%x)", f->path, (unsigned)ev->mask);
                    make_due(w, f->pool, f->path, now);
                }
            }
        }
    }
}

long watch_timeout_ms(const struct watch *w, long long now)
{
    long best = -1;
    for (size_t i = 0; i < w->npools; i++) {
        if (w->pools[i].due_ms == 0)
            continue;
        long left = w->pools[i].due_ms > now ? (long)(w->pools[i].due_ms - now) : 0;
        if (best < 0 || left < best)
            best = left;
    }
    return best;
}

const char *watch_next_due(struct watch *w, long long now, const char **file)
{
    for (size_t i = 0; i < w->npools; i++) {
        if (w->pools[i].due_ms != 0 && w->pools[i].due_ms <= now) {
            w->pools[i].due_ms = 0;
            *file = w->pools[i].changed ? w->pools[i].changed : "?";
            return w->pools[i].name;
        }
    }
    return NULL;
}
