# make run   - start the server (same as `go run .`)
# make test  - install what the tests need (as root), run every test, then fuzz
# make fuzz  - run each fuzz target for FUZZTIME (seed corpora: */testdata/fuzz)
# make jscheck - type-check the browser app (// @ts-check JSDoc) with tsc from npm
# make bench - load test: 10, 25, 50 calls through a fresh server and the
#              floor relays on this machine, printed as a table (not in test)
.PHONY: run test deps fuzz jscheck bench

# Debian packages the tests use, as "command:package".
TEST_DEPS := chromium:chromium ip:iproute2 nft:nftables ffmpeg:ffmpeg ffprobe:ffmpeg npm:npm redis-server:redis-server

# npm packages the browser tests inject into the page (axe-core, MPL-2.0,
# for the accessibility check), installed into the user's cache directory
# (where the tests look: os.UserCacheDir()/videochat-npm); AXE_CORE=path
# overrides it.
NPM_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/videochat-npm
AXE_VERSION := 4.14.1

run:
	go run .

test: deps
	go test -race -count=1 -p 1 -timeout 30m ./...
	$(MAKE) fuzz

# Fuzz targets as "package:Target"; each runs for FUZZTIME (a failing input
# is written even if its minimising is cut short), so the whole target
# stays under ~3 min. Go minimises every input that finds new coverage,
# not only failing ones, each for up to -fuzzminimizetime: a time budget
# (10 s) stalled the workers on multi-KB inputs at a few ms per exec, and
# one that expires kills and restarts the worker. FUZZMINIMIZE is a count
# of execs instead (about 0.3 s for FuzzHandle and FuzzSDPAndCandidates).
FUZZ_TARGETS := ./signaling:FuzzParseMessage ./signaling:FuzzHandle ./sfu:FuzzSDPAndCandidates
FUZZTIME ?= 25s
FUZZMINIMIZE ?= 100x

fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} ($(FUZZTIME))"; \
	  go test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) "$${t%%:*}" || exit 1; \
	done

# On a quiet machine, pin: BENCH_FLAGS="... -server-cpus 0" BENCH_PIN="taskset -c 1"
# (on a busy one pinning starves the clients and measures the neighbours).
BENCH_FLAGS ?= -calls 10,25,50 -warmup 3s -measure 10s
BENCH_PIN ?=

bench:
	@d=$$(mktemp -d /tmp/videochat-bench.XXXXXX); trap 'rm -rf "$$d"' EXIT; \
	go build -o "$$d/videochat" . && go build -o "$$d/loadtest" ./cmd/loadtest && \
	$(BENCH_PIN) "$$d/loadtest" -server-bin "$$d/videochat" $(BENCH_FLAGS)

deps:
	@missing=""; \
	for dep in $(TEST_DEPS); do \
	  command -v "$${dep%%:*}" >/dev/null 2>&1 || missing="$$missing $${dep#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "the tests need:$$missing -- install with: sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi
	@test -f "$(NPM_DIR)/node_modules/axe-core/axe.min.js" || \
	  npm install --prefix "$(NPM_DIR)" --no-audit --no-fund --silent axe-core@$(AXE_VERSION)

jscheck:
	@test -x "$(NPM_DIR)/node_modules/.bin/tsc" || \
	  npm install --prefix "$(NPM_DIR)" --no-audit --no-fund --silent typescript@5
	"$(NPM_DIR)/node_modules/.bin/tsc" --noEmit --allowJs --checkJs --target es2022 --module es2022 \
	  --lib es2022,dom,dom.iterable --skipLibCheck static/app.js
