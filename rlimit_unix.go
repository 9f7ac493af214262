//go:build unix

package main

import (
	"log/slog"
	"syscall"
)

// raiseFileLimit raises the soft limit of open files to the hard limit
// (every WebSocket, TURN connection and recording is a file descriptor)
// and logs it. Go does this itself since 1.19; doing it here makes it
// explicit and visible in the log.
func raiseFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("open file limit unknown", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		soft := lim.Cur
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn("cannot raise the open file limit", "soft", soft, "hard", lim.Max, "err", err)
			return
		}
	}
	log.Info("open file limit", "soft", lim.Cur, "hard", lim.Max)
	if lim.Cur < 10000+1024 { // the default WebSocket cap plus headroom
		log.Warn("the open file limit is below what the default connection caps can use; lower the WebSocket caps or raise the limit (LimitNOFILE= in systemd)", "limit", lim.Cur)
	}
}
