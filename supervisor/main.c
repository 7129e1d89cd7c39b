/* main.c: streamfleet, a prefork supervisor of Redis Streams consumers.
 * Options, config load and validation (-t stops here), logging, then the master's loop. */
#include "common/conf.h"
#include "common/log.h"
#include "supervisor/dlq.h"
#include "supervisor/master.h"
#include "supervisor/plugincheck.h"
#include "supervisor/privs.h"
#include "supervisor/statuscmd.h"

#include <getopt.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_CONF "/etc/streamfleet/streamfleet.ini"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamfleet [-c FILE] [-t]            run the fleet (the master and its workers)\n"
            "       streamfleet dlq list|replay|purge ...  dead letters (streamfleet dlq --help)\n"
            "       streamfleet status ...                 the fleet at a glance (streamfleet status --help)\n"
            "  -c, --config FILE  configuration file (default " DEFAULT_CONF ")\n"
            "  -t, --test         check the configuration and exit: 0 when valid, 1 with every problem\n"
            "  -V, --version      print the version and exit\n"
            "  -h, --help         print this help and exit\n"
            "environment: STREAMFLEET_REDIS overrides [fleet] redis\n"
            "exit status: 0 stopped cleanly or configuration OK, 1 failed, 2 usage\n");
}

/* A mistake on the command line: getopt or the caller has said what it was; point to --help,
 * as GNU programs do, rather than burying the message under the whole usage. */
static int usage_error(void)
{
    fprintf(stderr, "Try 'streamfleet --help' for more information.\n");
    return 2;
}

/* The password of STREAMFLEET_REDIS is in our environment block, which /proc/PID/environ
 * shows to anyone who may read it: overwrite it there. The block is the one the kernel set up
 * (getenv() points into it, and so do the children's copies after fork); setenv() first moves
 * the whole value to the heap, where /proc does not show it and where a reload's conf_load()
 * still finds the password (masking in place alone made every reload parse the mask). */
static void scrub_env_password(void)
{
    char *v = getenv("STREAMFLEET_REDIS");
    if (v == NULL)
        return;
    char *scheme = strstr(v, "://");
    char *at = strrchr(v, '@');
    if (scheme == NULL || at == NULL || at < scheme)
        return;
    char *copy = xstrdup(v);
    if (setenv("STREAMFLEET_REDIS", copy, 1) == -1)
        fatal("setenv STREAMFLEET_REDIS");
    explicit_bzero(copy, strlen(copy));
    free(copy);
    for (char *p = scheme + 3; p < at; p++)
        *p = '*';
}

int main(int argc, char **argv)
{
    /* A core dump would hold the Redis password and the signing secrets. */
    struct rlimit nocore = { 0, 0 };
    setrlimit(RLIMIT_CORE, &nocore);

    /* A subcommand parses its own options. getopt prefixes its messages with argv[0]: name
     * the subcommand there, so that "streamfleet dlq: unrecognized option" says whose. */
    static char self_name[] = "streamfleet", dlq_name[] = "streamfleet dlq", status_name[] = "streamfleet status";
    if (argc > 1 && strcmp(argv[1], "dlq") == 0) {
        argv[1] = dlq_name;
        return dlq_main(argc - 1, argv + 1);
    }
    if (argc > 1 && strcmp(argv[1], "status") == 0) {
        argv[1] = status_name;
        return status_main(argc - 1, argv + 1);
    }

    const char *path = DEFAULT_CONF;
    int check_only = 0;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' }, { "test", no_argument, NULL, 't' },
        { "version", no_argument, NULL, 'V' },      { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    argv[0] = self_name;                /* whatever path we were started by */
    int opt;
    while ((opt = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check_only = 1; break;
        case 'V': printf("streamfleet %s\n", SF_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: return usage_error();
        }
    }
    if (optind != argc) {
        fprintf(stderr, "streamfleet: unknown command '%s' (commands: dlq, status)\n", argv[optind]);
        return usage_error();
    }

    size_t problems;
    struct conf *conf = conf_load_or_report(path, &problems);
    if (conf == NULL) {
        fprintf(stderr, "%s: %zu problem%s, not started\n", path, problems, problems == 1 ? "" : "s");
        return 1;
    }
    scrub_env_password();
    if (check_only) {
        /* Plugins load in forked checkers: the master never runs plugin code. */
        problems = plugincheck_conf(conf);
        if (problems) {
            fprintf(stderr, "%s: %zu problem%s, not started\n", path, problems, problems == 1 ? "" : "s");
            conf_free(conf);
            return 1;
        }
        printf("%s: configuration OK (%zu pool%s)\n", path, conf->npools, conf->npools == 1 ? "" : "s");
        conf_free(conf);
        return 0;
    }

    log_init(conf->log_level, conf->log_format);
    if (conf->log_file && log_open_file(conf->log_file) == -1)
        fatal("cannot open log file %s", conf->log_file);

    /* As root: bind and open what needs root, then drop privileges before any fork. The
     * pidfile goes first, so that a second instance fails before touching the port. */
    static struct master m;
    char *pidfile = conf->pidfile ? xstrdup(conf->pidfile) : NULL;
    int status = 1;
    if (pidfile && pidfile_write(pidfile) == -1) {
        free(pidfile);
        conf_free(conf);
        return 1;
    }
    if (master_listen(&m, conf) == -1 || privs_drop(conf) == -1) {
        conf_free(conf);
        goto out;
    }
    status = master_run(&m, conf);       /* takes conf */
out:
    if (pidfile)
        pidfile_remove(pidfile);
    free(pidfile);
    return status;
}
