# make run   - start the server (same as `go run .`)
# make test  - install what the tests need (as root), then run every test
# make bench - load test: 10, 25, 50 calls through a fresh server and the
#              floor relays on this machine, printed as a table (not in test)
.PHONY: run test deps bench

# Debian packages the tests use, as "command:package".
TEST_DEPS := chromium:chromium ip:iproute2 nft:nftables ffmpeg:ffmpeg ffprobe:ffmpeg

run:
	go run .

test: deps
	go test -race -count=1 -p 1 -timeout 30m ./...

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
