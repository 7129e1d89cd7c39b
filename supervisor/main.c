/* main.c: streamfleet, a prefork supervisor of Redis Streams consumers.
 * Options, config load and validation (-t stops here), logging, then the master's loop. */
#include "common/conf.h"
#include "common/log.h"
#include "supervisor/dlq.h"
#include "supervisor/master.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_CONF "/etc/streamfleet/streamfleet.ini"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamfleet [-c FILE] [-t] [-V] [-h]\n"
            "  -c FILE  configuration file (default " DEFAULT_CONF ")\n"
            "  -t       check the configuration and exit: 0 when valid, 1 with every problem\n"
            "  -V       print the version and exit\n"
            "  -h       this help\n"
            "       streamfleet dlq (list|replay|purge) -c FILE --pool NAME ...   dead letters\n"
            "environment: STREAMFLEET_REDIS overrides [fleet] redis\n");
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "dlq") == 0)
        return dlq_main(argc - 1, argv + 1);

    const char *path = DEFAULT_CONF;
    int check_only = 0;
    int opt;
    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check_only = 1; break;
        case 'V': printf("streamfleet %s\n", SF_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    struct conf_errors errs = { 0 };
    struct conf *conf = conf_load(path, &errs);
    if (conf == NULL) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msg[i]);
        fprintf(stderr, "%s: %zu problem%s, not started\n", path, errs.n, errs.n == 1 ? "" : "s");
        conf_errors_release(&errs);
        return 1;
    }
    if (check_only) {
        printf("%s: configuration OK (%zu pool%s)\n", path, conf->npools, conf->npools == 1 ? "" : "s");
        conf_free(conf);
        return 0;
    }

    log_init(conf->log_level, conf->log_format);
    int status = master_run(conf);
    conf_free(conf);
    return status;
}
