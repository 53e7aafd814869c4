package printable

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "access_denied", 0, "access_denied"},
		{"terminal escapes", "access_denied\x1b]0;pwned\x07\x1b[2J", 0, "access_denied ]0;pwned  [2J"},
		{"c1 controls", "a\u009bb\u0085c", 0, "a b c"},
		{"bidi", "safe\u202egnp.exe\u2066x\u2069\u200f", 0, "safe gnp.exe x  "},
		{"newlines and tabs", "a\nb\tc\r", 0, "a b c "},
		{"invalid utf-8", "a\xffb", 0, "a b"},
		{"unicode kept", "Zoë ☕", 0, "Zoë ☕"},
		{"bounded", "abcdefgh", 5, "abcde…"},
		{"bounded at a rune", "ééé", 3, "é…"},
		{"bounded and cleaned", "a\x1bbcdef", 3, "a b…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := String(tc.in, tc.max); got != tc.want {
				t.Errorf("String(%q, %d) = %q; want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"invalid_grant", 64, "invalid_grant"},
		{"bad\"code\\\x1b[2J\u202e", 64, "badcode[2J"},
		{strings.Repeat("x", 70000), 64, strings.Repeat("x", 64)},
	} {
		if got := Code(tc.in, tc.max); got != tc.want {
			t.Errorf("Code(%.20q, %d) = %q; want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "access_denied\x1b[2J", "\u202e", "\xff\xfe", "ééé"} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = max % 1000
		got := String(s, max)
		if !utf8.ValidString(got) {
			t.Fatalf("String(%q) = %q is not valid UTF-8", s, got)
		}
		for _, r := range got {
			if unsafe(r) {
				t.Fatalf("String(%q) = %q keeps %U", s, got, r)
			}
		}
		if max > 0 && len(got) > max+len("…") {
			t.Fatalf("String(%q, %d) = %d bytes", s, max, len(got))
		}
	})
}
