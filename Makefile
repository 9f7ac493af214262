# make run   - start the server (same as `go run .`)
# make test  - install what the tests need (as root), then run every test
.PHONY: run test deps

# Debian packages the tests use, as "command:package".
TEST_DEPS := chromium:chromium ip:iproute2 nft:nftables ffmpeg:ffmpeg ffprobe:ffmpeg redis-server:redis-server

run:
	go run .

test: deps
	go test -race -count=1 -p 1 -timeout 30m ./...

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
