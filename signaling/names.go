package signaling

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mtibben/confusables"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// Names are what people see of each other, so one must not pass for
// another: cleanName refuses characters that do not show (zero-width,
// soft hyphen, variation selectors, fillers) or that reorder what shows
// (bidi controls), and nameKey makes names that differ only by case or
// by look-alike characters (Unicode TR39 confusables, e.g. Cyrillic "а"
// for Latin "a", "I" for "l", "rn" for "m") the same name.

// maxCombining bounds consecutive combining marks on one letter (no
// script needs more; "Zalgo" text stacks dozens).
const maxCombining = 4

var (
	errNameEmpty     = errors.New("name is empty")
	errNameControl   = errors.New("name contains control or invalid characters")
	errNameBidi      = errors.New("name contains text-direction controls (they can make it display as another name)")
	errNameInvisible = errors.New("name contains invisible characters (such as a zero-width space or a soft hyphen)")
	errNameSpace     = errors.New("name contains a space other than the plain space")
	errNameMarks     = errors.New("name stacks too many combining marks on one character")
)

// cleanName returns the name as it will be shown (trimmed, Unicode NFC)
// or why it cannot be used.
func cleanName(raw string) (string, error) {
	if !utf8.ValidString(raw) {
		return "", errNameControl
	}
	name := norm.NFC.String(strings.TrimSpace(raw))
	switch n := utf8.RuneCountInString(name); {
	case n == 0:
		return "", errNameEmpty
	case n > maxNameRunes:
		return "", fmt.Errorf("name is longer than %d characters", maxNameRunes)
	}
	marks := 0
	for _, r := range name {
		if err := checkNameRune(r); err != nil {
			return "", err
		}
		if unicode.In(r, unicode.Mn, unicode.Me) {
			if marks++; marks > maxCombining {
				return "", errNameMarks
			}
		} else {
			marks = 0
		}
	}
	return name, nil
}

func checkNameRune(r rune) error {
	switch {
	case r == utf8.RuneError || unicode.IsControl(r) || unicode.In(r, unicode.Cs, unicode.Co) ||
		!unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.Cf):
		// controls, surrogates, private use, unassigned (Cn)
		return errNameControl
	case isBidiControl(r):
		return errNameBidi
	case isInvisible(r):
		return errNameInvisible
	case unicode.In(r, unicode.Zl, unicode.Zp) || (unicode.Is(unicode.Zs, r) && r != ' '):
		return errNameSpace
	}
	return nil
}

// isBidiControl reports the explicit directional formatting characters
// (UAX #9: ALM, LRM, RLM, LRE..RLO, LRI..PDI).
func isBidiControl(r rune) bool {
	return r == 0x061C || r == 0x200E || r == 0x200F || (r >= 0x202A && r <= 0x202E) ||
		(r >= 0x2066 && r <= 0x2069)
}

// isInvisible reports Default_Ignorable_Code_Point characters (format
// characters such as U+200B zero-width space, U+00AD soft hyphen, U+2060
// word joiner, U+FEFF; variation selectors; Hangul fillers; tags) and
// blanks that render as nothing (U+2800 braille blank).
func isInvisible(r rune) bool {
	return unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point) ||
		r == 0x2800 || r == 0x3164 || r == 0xFFA0 || r == 0x115F || r == 0x1160
}

var folder = cases.Fold()

// nameKey is what makes two names the same name: the TR39 skeleton of the
// case-folded NFC name, folded again (skeletons contain capitals, e.g.
// "0" -> "O") until stable. Names with the same key are taken by one
// person at a time.
func nameKey(name string) string {
	k := norm.NFC.String(name)
	for range 4 {
		next := folder.String(norm.NFC.String(confusables.Skeleton(folder.String(k))))
		if next == k {
			break
		}
		k = next
	}
	return k
}

// caseKey is the case-sensitive TR39 skeleton, folded: it catches what
// folding first hides, a capital I for an l ("aIice" shows as "alice" in
// many fonts but folds to "aiice").
func caseKey(name string) string {
	return folder.String(norm.NFC.String(confusables.Skeleton(norm.NFC.String(name))))
}

// nameKeys are the keys a name holds: nameKey and caseKey, prefixed so
// they share one map.
func nameKeys(name string) [2]string {
	return [2]string{"f:" + nameKey(name), "s:" + caseKey(name)}
}

// nameInUse reports whether name, or a name sharing one of its keys, is
// online. Called with s.mu held.
func (s *Server) nameInUse(name string) bool {
	if s.names[name] != nil {
		return true
	}
	for _, k := range nameKeys(name) {
		// A holder no longer registered under its name was removed by a
		// path that did not release its keys: the key is free.
		if ss := s.keys[k]; ss != nil && s.names[ss.name] == ss {
			return true
		}
	}
	return false
}

// reserveName records that session ss holds name's keys. Called with s.mu held.
func (s *Server) reserveName(name string, ss *session) {
	if s.keys == nil {
		s.keys = map[string]*session{}
	}
	for _, k := range nameKeys(name) {
		s.keys[k] = ss
	}
}

// releaseName forgets ss's hold on name's keys. Called with s.mu held.
func (s *Server) releaseName(name string, ss *session) {
	for _, k := range nameKeys(name) {
		if s.keys[k] == ss {
			delete(s.keys, k)
		}
	}
}
