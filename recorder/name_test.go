package recorder

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var hostileNames = []string{
	"../../etc/x", "a/b/c", "/etc/passwd", "nul\x00byte", strings.Repeat("x", 300), "", ".", "..",
	"...", "Zoë 🎥 会议", `C:\Windows\x`, "-rf", "name with spaces", "\n\r\t", "alice",
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{
		"alice": "alice", "Bob-2.x_y": "Bob-2.x_y", "../../etc/x": ".._.._etc_x", "a/b": "a_b",
		"nul\x00": "nul_", "": "unnamed", ".": "unnamed", "..": "unnamed", "Zoë": "Zo_",
		strings.Repeat("é", 50): strings.Repeat("_", 40),
	} {
		if got := sanitizeName(in); got != want {
			t.Errorf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
	ok := regexp.MustCompile(`^[A-Za-z0-9._-]{1,40}$`)
	for _, in := range hostileNames {
		got := sanitizeName(in)
		if !ok.MatchString(got) || got == "." || got == ".." {
			t.Errorf("sanitizeName(%q) = %q", in, got)
		}
	}
}

// TestHostileNamesStayInDir records a participant under each hostile
// name (and call ID) and checks that every file lands directly in Dir,
// with a short name, and that an existing file is never overwritten.
func TestHostileNamesStayInDir(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "rec", "dings") // created by New
	r, clk, _ := newTestRecorder(t, Config{Dir: dir})

	// The file alice's recording would get exists already.
	existing := filepath.Join(dir, baseName(clk.Now(), "call", "alice")+".webm")
	if err := os.WriteFile(existing, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, call := range []string{"call", "../../up"} {
		for _, name := range hostileNames {
			a := r.StartTrack(audioInfo(call, name, 1))
			for i := 0; i < 10; i++ {
				if err := a.WriteRTP(marshal(t, opusPacket(i, 1))); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if b, err := os.ReadFile(existing); err != nil || string(b) != "precious" {
		t.Fatalf("existing file overwritten: %q %v", b, err)
	}
	if _, err := os.Stat(strings.TrimSuffix(existing, ".webm") + "-2.webm"); err != nil {
		t.Errorf("no counter-suffixed file next to the existing one: %v", err)
	}
	var files []string
	err := filepath.WalkDir(parent, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if filepath.Dir(path) != dir {
			t.Errorf("file outside Dir: %s", path)
		}
		if len(d.Name()) > 110 {
			t.Errorf("name of %d bytes: %s", len(d.Name()), d.Name())
		}
		files = append(files, d.Name())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// "", ".", ".." and "..." all become "unnamed" and share a name, so
	// they need counters too; every recording has a file of its own.
	if want := 2*len(hostileNames) + 1; len(files) != want {
		t.Errorf("%d files, want %d: %v", len(files), want, files)
	}
	ts := clk.Now().UTC().Format("20060102T150405Z")
	for _, f := range files {
		if !strings.HasPrefix(f, ts+"_") {
			t.Errorf("file %q does not start with the time stamp %s", f, ts)
		}
	}
}

func TestCreateFileGivesUp(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	base := baseName(time.Unix(0, 0), "c", "p")
	for i := 1; i <= maxNameTries; i++ {
		f, _, err := createFile(root, base)
		if err != nil {
			t.Fatalf("try %d: %v", i, err)
		}
		f.Close()
	}
	if _, _, err := createFile(root, base); err == nil {
		t.Fatal("createFile found a free name after all counters were taken")
	}
}
