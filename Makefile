# make run   - start the server (same as `go run .`)
# make test  - install what the tests need (as root), run every test, then fuzz
# make fuzz  - run each fuzz target for FUZZTIME (seed corpora: */testdata/fuzz)
.PHONY: run test deps fuzz

# Debian packages the tests use, as "command:package".
TEST_DEPS := chromium:chromium ip:iproute2 nft:nftables ffmpeg:ffmpeg ffprobe:ffmpeg

run:
	go run .

test: deps
	go test -race -count=1 -p 1 -timeout 30m ./...
	$(MAKE) fuzz

# Fuzz targets as "package:Target"; each runs for FUZZTIME, and minimising
# a failing input is bounded too, so the whole target stays under ~3 min.
FUZZ_TARGETS := ./signaling:FuzzParseMessage ./signaling:FuzzHandle ./sfu:FuzzSDPAndCandidates
FUZZTIME ?= 25s

fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} ($(FUZZTIME))"; \
	  go test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10s "$${t%%:*}" || exit 1; \
	done

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
