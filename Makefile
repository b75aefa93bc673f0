# nnzip build. `make` builds the library and CLI (release); `make test` runs the whole test
# suite: release tests, then the same unit tests under ASan+UBSan. See README.md.
CC       ?= cc
BUILD    ?= build
# OpenBLAS's OpenMP build runs single-threaded inside our own OpenMP regions (no oversubscription).
BLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_INC ?= /usr/include/x86_64-linux-gnu/openblas-openmp
OPT      ?= -O3 -march=native -fno-math-errno
WARN      = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wno-unknown-pragmas
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(WARN) $(OPT) -g -fopenmp \
             -Iinclude -Isrc -I$(BLAS_INC) $(EXTRA_CFLAGS)
LDLIBS_ALL = -fopenmp -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -lz -lm $(EXTRA_LDFLAGS)

LIB_SRCS  := $(sort $(wildcard src/*/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
TEST_SRCS := $(sort $(wildcard tests/test_*.c))
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
BENCH_SRCS := $(sort $(wildcard bench/*.c))
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

.PHONY: all clean test test-unit test-asan check-fast bench
all: $(BUILD)/nnzip $(TEST_BINS) $(BENCH_BINS)

$(BUILD)/%.o: %.c $(wildcard include/nnzip/*.h) $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/libnnzip.a: $(LIB_OBJS)
	@rm -f $@
	@ar rcs $@ $^

$(BUILD)/nnzip: $(BUILD)/tools/nnzip.o $(BUILD)/libnnzip.a
	@echo "LD $@"
	@$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(BUILD)/libnnzip.a
	@mkdir -p $(dir $@)
	@echo "LD $@"
	@$(CC) $(CFLAGS_ALL) -Itests -o $@ $< $(BUILD)/libnnzip.a $(LDLIBS_ALL)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libnnzip.a
	@mkdir -p $(dir $@)
	@echo "LD $@"
	@$(CC) $(CFLAGS_ALL) -o $@ $< $(BUILD)/libnnzip.a $(LDLIBS_ALL)

# The README's test command. Everything a user needs to trust the build, < 15 minutes on 2 cores.
test:
	scripts/run_tests.sh

clean:
	rm -rf build build-asan build-vg build-fuzz build-avx2
