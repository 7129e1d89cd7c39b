/* dlq.h: `streamfleet dlq list|replay|purge`, the dead-letter tooling. */
#ifndef SF_DLQ_H
#define SF_DLQ_H

/* argv[0] names the command (getopt says it in its messages), argv[1] is the verb, or --help
 * or --version. Returns the process exit status: 0 done, 1 failed, 2 usage. */
int dlq_main(int argc, char **argv);

#endif
