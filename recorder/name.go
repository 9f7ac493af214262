package recorder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

const (
	maxNamePart   = 40  // bytes kept of a call ID or participant name
	maxNameTries  = 100 // counter suffixes tried before giving up
	fileMode      = 0o640
	fileExtension = ".webm"
)

// sanitizeName keeps [A-Za-z0-9._-], turns every other rune into '_',
// truncates to maxNamePart bytes and never returns "", "." or "..".
func sanitizeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxNamePart {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	out := b.String()
	if strings.Trim(out, ".") == "" {
		return "unnamed"
	}
	return out
}

// baseName is the file name without counter and extension.
func baseName(start time.Time, callID, participant string) string {
	return start.UTC().Format("20060102T150405Z") + "_" + sanitizeName(callID) + "_" + sanitizeName(participant)
}

// createFile creates a new file named after base inside root, adding
// "-2", "-3", ... when the name is taken. It never opens an existing file.
func createFile(root *os.Root, base string) (*os.File, string, error) {
	for i := 1; i <= maxNameTries; i++ {
		name := base + fileExtension
		if i > 1 {
			name = fmt.Sprintf("%s-%d%s", base, i, fileExtension)
		}
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
		if err == nil {
			return f, name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, "", err
		}
	}
	return nil, "", fmt.Errorf("no free file name for %q", base)
}
