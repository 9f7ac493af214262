package main

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

// A server that died is reported as exited, not measured as a process of
// RSS 0 whose sockets lost their drop counters: the child stays a zombie
// until reaped, and its /proc entry still reads.
func TestReadProcSeesExitedChild(t *testing.T) {
	if _, err := readProc(os.Getpid()); err != nil {
		t.Fatalf("this process: %v", err)
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := readProc(cmd.Process.Pid)
		if errors.Is(err, errExited) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("an exited child read as %v, want errExited", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
