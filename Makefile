# streamfleet: one binary (bin/streamfleet) built from common/, supervisor/ and child/.
#   make          build bin/streamfleet
#   make run      install what is missing, build, start a demo redis-server and the fleet
#   make test     install what is missing, build with sanitizers, run every test
VERSION := 0.1.0
PKGS    := hiredis libcurl openssl inih libmicrohttpd
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

.PHONY: all run test unit bootstrap clean install bench
all: $(BIN)

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

unit: $(UNIT_BINS)
bench: $(BENCH_BINS) $(BIN)

bootstrap:
	@scripts/bootstrap

run: bootstrap
	@$(MAKE) --no-print-directory all
	@scripts/run-demo

test: bootstrap
	@$(MAKE) --no-print-directory SAN=1 all unit
	@$(MAKE) --no-print-directory all
	@tests/run

PREFIX  ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/streamfleet
	install -D -m 0644 etc/streamfleet.ini $(DESTDIR)$(SYSCONFDIR)/streamfleet/streamfleet.ini.example
	mkdir -p $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|' -e 's|/etc/streamfleet/|$(SYSCONFDIR)/streamfleet/|' \
	    etc/streamfleet.service > $(DESTDIR)$(UNITDIR)/streamfleet.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/streamfleet.service

clean:
	rm -rf build bin

-include $(OBJS:.o=.d)
