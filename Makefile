# streamfleet: one binary (bin/streamfleet) built from common/, supervisor/ and child/.
#   make          build bin/streamfleet
#   make run      install what is missing, build, start a demo redis-server and the fleet
#   make test     install what is missing, build with sanitizers, run every test
#   make fuzz     build the libFuzzer targets and run each for FUZZ_SECONDS (60) from its corpus
VERSION := 0.1.0
PKGS    := hiredis libcurl openssl inih libmicrohttpd jansson
CC      ?= cc
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla -Werror
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -DSF_VERSION='"$(VERSION)"' $(WARN) $(CFLAGS) \
             -I. $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -MMD -MP
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm

SRCS    := $(wildcard common/*.c) $(wildcard supervisor/*.c) $(wildcard child/*.c)
# The sanitizer build lives beside the plain one so `make test` never overwrites `make run`'s binary.
SAN     ?= 0
ifeq ($(SAN),1)
BUILD   := build/san
ALL_CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
BIN     := build/san/streamfleet
else
BUILD   := build/plain
BIN     := bin/streamfleet
endif
OBJS    := $(SRCS:%.c=$(BUILD)/%.o)
COMMON_OBJS := $(filter $(BUILD)/common/%,$(OBJS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRCS := $(wildcard tests/bench/*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(BUILD)/bench/%)

# libFuzzer targets: tests/fuzz/fuzz_NAME.c, its seed corpus in tests/fuzz/corpus/NAME/. They are
# built with clang into a tree of their own (objects with fuzzer-no-link, so the fuzzer's
# coverage reaches into our code; the link adds libFuzzer's main). Like a unit test, a target
# links all of common/ and what its first line lists ("// links: a.c b.c"). -Werror is left to
# the gcc builds: a warning only clang gives must not stop `make test`.
FUZZ_CC    ?= clang
FUZZ_SAN   := address,undefined
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -DSF_VERSION='"$(VERSION)"' $(filter-out -Werror,$(WARN)) -Wno-format-nonliteral \
              -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,$(FUZZ_SAN) \
              -fno-sanitize-recover=undefined -I. $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -MMD -MP
FUZZ_OBJS  := $(SRCS:%.c=build/fuzz/obj/%.o)
FUZZ_COMMON_OBJS := $(filter build/fuzz/obj/common/%,$(FUZZ_OBJS))
FUZZ_SRCS  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS  := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 60
# objects a pattern rule made on the way to a target: keep them (make would delete them)
.SECONDARY: $(FUZZ_OBJS)

.PHONY: all run test unit bootstrap clean install bench fuzz fuzzers plugins
all: $(BIN) plugins

# Example handler plugins (handler = plugin): examples/plugins/NAME.c -> $(BUILD)/plugins/NAME.so,
# against the public header alone (include/streamfleet/plugin.h). The tests load them from there.
PLUGIN_SRCS := $(wildcard examples/plugins/*.c)
PLUGIN_SOS  := $(PLUGIN_SRCS:examples/plugins/%.c=$(BUILD)/plugins/%.so)
plugins: $(PLUGIN_SOS)
$(BUILD)/plugins/%.so: examples/plugins/%.c include/streamfleet/plugin.h
	@mkdir -p $(dir $@)
	@echo "  PLUGIN  $@"
	@$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(filter -fsanitize=% -fno-%,$(ALL_CFLAGS)) \
	    -fPIC -shared -Iinclude $(LDFLAGS) -o $@ $<

$(BIN): $(OBJS)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

# A unit test links the pure modules it tests: all of common/, plus the few child/ and
# supervisor/ files that are pure (listed per test in the test's first line: "// links: a.c b.c").
$(BUILD)/tests/%: tests/unit/%.c $(OBJS)
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	@$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(COMMON_OBJS) \
	    $(patsubst %.c,$(BUILD)/%.o,$(shell sed -n '1s|^// links: ||p' $<)) \
	    $(shell pkg-config --libs cmocka) $(LDLIBS)

$(BUILD)/bench/%: tests/bench/%.c
	@mkdir -p $(dir $@)
	@echo "  BENCH   $@"
	@$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS)

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  FUZZCC  $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

build/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJS)
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $@"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,$(FUZZ_SAN) -o $@ $< $(FUZZ_COMMON_OBJS) \
	    $(patsubst %.c,build/fuzz/obj/%.o,$(shell sed -n '1s|^// links: ||p' $<)) $(LDLIBS)

unit: $(UNIT_BINS)
fuzzers: $(FUZZ_BINS)

# Every target for FUZZ_SECONDS, through the fuzz step of tests/run (a crash fails, and its
# input is kept in the target's corpus).
fuzz: fuzzers
	@FUZZ_SECONDS=$(FUZZ_SECONDS) STEPS=fuzz tests/run
bench: $(BENCH_BINS) $(BIN)

bootstrap:
	@scripts/bootstrap

run: bootstrap
	@$(MAKE) --no-print-directory all
	@scripts/run-demo

test: bootstrap
	@$(MAKE) --no-print-directory SAN=1 all unit
	@$(MAKE) --no-print-directory all fuzzers
	@tests/run

PREFIX  ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/streamfleet
	install -D -m 0644 include/streamfleet/plugin.h $(DESTDIR)$(PREFIX)/include/streamfleet/plugin.h
	install -D -m 0644 etc/streamfleet.ini $(DESTDIR)$(SYSCONFDIR)/streamfleet/streamfleet.ini.example
	mkdir -p $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|' -e 's|/etc/streamfleet/|$(SYSCONFDIR)/streamfleet/|' \
	    etc/streamfleet.service > $(DESTDIR)$(UNITDIR)/streamfleet.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/streamfleet.service

clean:
	rm -rf build bin

-include $(OBJS:.o=.d) $(FUZZ_OBJS:.o=.d)
