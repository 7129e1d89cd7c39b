# streamfleet: one binary (bin/streamfleet) built from common/, supervisor/ and child/.
#   make          build bin/streamfleet
#   make run      install what is missing, build, start a demo redis-server and the fleet
#   make test     install what is missing, build with sanitizers, run every test
#   make fuzz     build the libFuzzer targets and run each for FUZZ_SECONDS (60) from its corpus
#   make deb      build the Debian package build/deb/streamfleet_VERSION_ARCH.deb (dpkg-buildpackage)
#   make install  the binary, unit, example config, man pages and bash completion (DESTDIR, PREFIX)
VERSION := 0.1.0
PKGS    := hiredis libcurl openssl inih libmicrohttpd jansson
CC      ?= cc
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla -Werror
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -DSF_VERSION='"$(VERSION)"' $(WARN) $(CPPFLAGS) $(CFLAGS) \
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
UNIT_HELPER_OBJS := $(BUILD)/tests/unit/scratch.o
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
.SECONDARY: $(FUZZ_OBJS) $(UNIT_HELPER_OBJS)

.PHONY: all run test unit bootstrap clean install bench fuzz fuzzers plugins man deb
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
# supervisor/ files that are pure (listed per test in the test's first line: "// links: a.c b.c"),
# and the helpers the unit tests share (UNIT_HELPER_OBJS).
$(BUILD)/tests/%: tests/unit/%.c $(OBJS) $(UNIT_HELPER_OBJS)
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	@$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(UNIT_HELPER_OBJS) $(COMMON_OBJS) \
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
MANDIR  ?= $(PREFIX)/share/man
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
# The config goes in as an example beside a config of your own; a package installs it as the
# config itself (CONF_NAME=streamfleet.ini), running as its own user (CONF_USER), with a mode
# that keeps a password in it from other users (CONF_MODE=0640).
CONF_NAME ?= streamfleet.ini.example
CONF_USER ?=
CONF_MODE ?= 0644
install: $(BIN) man
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/streamfleet
	install -D -m 0644 include/streamfleet/plugin.h $(DESTDIR)$(PREFIX)/include/streamfleet/plugin.h
	mkdir -p $(DESTDIR)$(SYSCONFDIR)/streamfleet
	sed -e '' $(if $(CONF_USER),-e 's|^user = nobody |user = $(CONF_USER)|' -e 's|^group = nogroup|group = $(CONF_USER)|') \
	    etc/streamfleet.ini > $(DESTDIR)$(SYSCONFDIR)/streamfleet/$(CONF_NAME)
	chmod $(CONF_MODE) $(DESTDIR)$(SYSCONFDIR)/streamfleet/$(CONF_NAME)
	mkdir -p $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|' -e 's|/etc/streamfleet/|$(SYSCONFDIR)/streamfleet/|' \
	    etc/streamfleet.service > $(DESTDIR)$(UNITDIR)/streamfleet.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/streamfleet.service
	install -D -m 0644 build/man/streamfleet.8 $(DESTDIR)$(MANDIR)/man8/streamfleet.8
	install -D -m 0644 build/man/streamfleet.ini.5 $(DESTDIR)$(MANDIR)/man5/streamfleet.ini.5
	install -D -m 0644 etc/bash-completion/streamfleet $(DESTDIR)$(COMPLETIONDIR)/streamfleet

# Man pages: streamfleet(8) is written in roff; streamfleet.ini(5) is its roff head and tail
# around the key tables of docs/configuration.md, converted, so that it lists the same keys.
man: build/man/streamfleet.8 build/man/streamfleet.ini.5
build/man/streamfleet.8: man/streamfleet.8
	@mkdir -p $(dir $@)
	cp $< $@
build/man/streamfleet.ini.5: man/streamfleet.ini.5.in docs/configuration.md scripts/man-keys
	@mkdir -p $(dir $@)
	scripts/man-keys man/streamfleet.ini.5.in docs/configuration.md > $@.tmp && mv $@.tmp $@

# The Debian package, built by Debian's tools (debian/) from a copy of the tree's files (git's
# list: tracked and untracked, not ignored), so that the build leaves the tree as it was. The
# .deb and its .buildinfo and .changes land in DEB_DIR. Needs debhelper (scripts/bootstrap).
DEB_DIR ?= build/deb
deb:
	rm -rf $(DEB_DIR)/streamfleet-$(VERSION) $(DEB_DIR)/streamfleet[-_]*.*
	mkdir -p $(DEB_DIR)/streamfleet-$(VERSION)
	git ls-files -z --cached --others --exclude-standard | \
	    xargs -0 sh -c 'for f; do [ -e "$$f" ] && printf "%s\0" "$$f"; done' sh | \
	    tar -c --null -T - -f - | tar -x -C $(DEB_DIR)/streamfleet-$(VERSION) -f -
	cd $(DEB_DIR)/streamfleet-$(VERSION) && dpkg-buildpackage -b -us -uc
	@ls $(DEB_DIR)/*.deb

clean:
	rm -rf build bin

-include $(OBJS:.o=.d) $(FUZZ_OBJS:.o=.d) $(UNIT_HELPER_OBJS:.o=.d)
