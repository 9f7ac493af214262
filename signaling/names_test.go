package signaling

import (
	"strings"
	"testing"
)

func TestCleanName(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error // nil: accepted as want
	}{
		{"alice", "alice", nil},
		{"  Zoë  ", "Zoë", nil},
		{"Zoe\u0308", "Zoë", nil}, // NFD in, NFC out
		{"Jean Luc", "Jean Luc", nil},
		{"Đặng Thị", "Đặng Thị", nil},
		{"नमस्ते", "नमस्ते", nil},             // combining marks are letters' business
		{"محمد", "محمد", nil},                 // right-to-left script, no controls
		{"alice\u200B", "", errNameInvisible}, // zero-width space
		{"al\u00ADice", "", errNameInvisible}, // soft hyphen
		{"al\u200Dice", "", errNameInvisible}, // zero-width joiner
		{"\uFEFFalice", "", errNameInvisible}, // BOM / zero-width no-break space
		{"alice\uFE0F", "", errNameInvisible}, // variation selector
		{"al\u2060ice", "", errNameInvisible}, // word joiner
		{"\u3164", "", errNameInvisible},      // Hangul filler
		{"\u2800alice", "", errNameInvisible}, // braille blank
		{"\u202Eecila", "", errNameBidi},      // right-to-left override: shows as "alice"
		{"\u2067alice\u2069", "", errNameBidi},
		{"alice\u200F", "", errNameBidi},
		{"al\u00A0ice", "", errNameSpace},
		{"al\u3000ice", "", errNameSpace},
		{"a\u2028b", "", errNameSpace},
		{"a\x00b", "", errNameControl},
		{"a\u0085b", "", errNameControl},
		{"a\uE000b", "", errNameControl},      // private use
		{"a\U000E0041", "", errNameInvisible}, // tag character
		{"a\u0378b", "", errNameControl},      // unassigned
		{"a" + strings.Repeat("\u0301", 6), "", errNameMarks},
		{"   ", "", errNameEmpty},
		{"\xff", "", errNameControl},
	} {
		got, err := cleanName(tc.in)
		if err != tc.err || got != tc.want {
			t.Errorf("cleanName(%+q) = %+q, %v; want %+q, %v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && err.Error() == "" {
			t.Errorf("cleanName(%+q): empty message", tc.in)
		}
	}
	if _, err := cleanName(strings.Repeat("é", 64)); err != nil {
		t.Errorf("64 characters refused: %v", err)
	}
	if _, err := cleanName(strings.Repeat("e\u0301", 64)); err != nil { // 128 runes, 64 after NFC
		t.Errorf("64 decomposed characters refused: %v", err)
	}
	if _, err := cleanName(strings.Repeat("é", 65)); err == nil {
		t.Error("65 characters accepted")
	}
}

// sameName reports whether a and b share a key (one would be refused
// while the other is online).
func sameName(a, b string) bool {
	ka, kb := nameKeys(a), nameKeys(b)
	return ka[0] == kb[0] || ka[1] == kb[1]
}

func TestNameKey(t *testing.T) {
	same := [][]string{
		// Cyrillic а/А, case, capital I for l, fullwidth, mathematical bold, dotless i
		{"alice", "Alice", "ALICE", "\u0430lice", "\u0410LICE", "aIice", "ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞", "al\u0131ce"},
		{"bob", "BOB", "b0b", "bOb", "\u042Cob"}, // zero, Cyrillic soft sign
		{"mario", "rnario", "MARIO"},
		{"zoë", "Zoë", "Zoe\u0308"},
		{"paypal", "p\u0430yp\u0430l", "PAYPAL"},
		{"straße", "STRASSE", "strasse"},
	}
	for _, group := range same {
		for _, n := range group[1:] {
			if !sameName(group[0], n) {
				t.Errorf("%+q (keys %q) passes for %q (keys %q)", n, nameKeys(n), group[0], nameKeys(group[0]))
			}
		}
	}
	if nameKey("Alice") != nameKey("alice") || nameKey("\u0430lice") != nameKey("alice") {
		t.Error("nameKey differs by case or Cyrillic а")
	}
	for _, pair := range [][2]string{{"alice", "alicia"}, {"bob", "rob"}, {"zoe", "zoë"}, {"anna", "hanna"}, {"ali", "all"}} {
		if sameName(pair[0], pair[1]) {
			t.Errorf("%q and %q share a key", pair[0], pair[1])
		}
	}
}

// While alice is online, every name that passes for hers is refused with a
// message that says why; they are free again once she leaves.
func TestImpersonatingNamesAreRefused(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.login("alice")
	for _, tc := range []struct{ what, name, msg string }{
		{"Cyrillic а", "\u0430lice", "looks the same"},
		{"case", "Alice", "looks the same"},
		{"capital I for l", "aIice", "looks the same"},
		{"zero-width space", "alice\u200B", "invisible"},
		{"soft hyphen", "al\u00ADice", "invisible"},
		{"right-to-left override", "\u202Eecila", "text-direction"},
		{"padded", " alice ", "taken"},
	} {
		c := e.dial(nil)
		c.send(map[string]any{"type": "login", "name": tc.name})
		m := c.expect(typeLogin)
		if m.Success == nil || *m.Success || !strings.Contains(m.Message, tc.msg) {
			t.Errorf("%s (%+q): %+v, want refused with %q", tc.what, tc.name, m, tc.msg)
		}
	}
	bob := e.login("bob")
	bob.waitUsers("alice", "bob")
	alice.closeFrame()
	bob.waitUsers("bob")
	e.login("\u0430lice") // the look-alike is free once alice left
}
