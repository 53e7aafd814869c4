package wirejson

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestRoundTrip(t *testing.T) {
	for _, s := range []string{"", "gho_abc", `a"b\c`, "line\nbreak\x01\x7f", "ünïcødé ☕", "slash/ok"} {
		raw := AppendQuoted(nil, []byte(s))
		if n := QuotedLen([]byte(s)); n != len(raw) {
			t.Errorf("QuotedLen(%q) = %d; AppendQuoted wrote %d bytes", s, n, len(raw))
		}
		var want string
		if err := json.Unmarshal(raw, &want); err != nil || want != s {
			t.Fatalf("AppendQuoted(%q) = %s, which encoding/json reads as %q, %v", s, raw, want, err)
		}
		n, err := UnquotedLen(raw)
		if err != nil || n != len(s) {
			t.Fatalf("UnquotedLen(%s) = %d, %v; want %d", raw, n, err, len(s))
		}
		dst := make([]byte, n)
		if err := Unquote(dst, raw); err != nil || string(dst) != s {
			t.Errorf("Unquote(%s) = %q, %v; want %q", raw, dst, err, s)
		}
	}
}

func TestUnquoteAgreesWithEncodingJSON(t *testing.T) {
	for _, raw := range []string{
		`"a\/b"`, `"\u00e9\u2603"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ud83dx"`, `"\b\f\n\r\t"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatal(err)
		}
		n, err := UnquotedLen([]byte(raw))
		dst := make([]byte, n)
		if err == nil {
			err = Unquote(dst, []byte(raw))
		}
		if err != nil || string(dst) != want {
			t.Errorf("Unquote(%s) = %q, %v; want %q", raw, dst, err, want)
		}
	}
}

func TestUnquoteRefusesMalformed(t *testing.T) {
	for _, raw := range []string{``, `"`, `abc`, `"a"b"`, `"\x"`, `"\u12"`, `"\u12zz"`, "\"a\x01\"", `"trailing\"`} {
		if _, err := UnquotedLen([]byte(raw)); err == nil {
			t.Errorf("UnquotedLen(%q) = nil error; want errSyntax", raw)
		}
	}
}

func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`"abc"`, `"\u00e9"`, `"\ud83d\ude00"`, `"a\"b"`, `"\/"`, `"`, `"\ud800\u0041"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(bytes.TrimSpace(raw)) != len(raw) {
			return // a literal as json.RawMessage holds it: no surrounding space
		}
		n, err := UnquotedLen(raw)
		var want string
		jerr := json.Unmarshal(raw, &want)
		if err != nil {
			if jerr == nil && len(raw) > 0 && raw[0] == '"' {
				t.Fatalf("Unquote refused %q, which encoding/json reads as %q", raw, want)
			}
			return
		}
		dst := make([]byte, n)
		if err := Unquote(dst, raw); err != nil {
			t.Fatalf("UnquotedLen accepted %q but Unquote = %v", raw, err)
		}
		if jerr != nil {
			t.Fatalf("Unquote accepted %q (%q), which encoding/json refuses: %v", raw, dst, jerr)
		}
		// Invalid UTF-8 passes through unchanged (tokens are opaque
		// bytes), where encoding/json substitutes U+FFFD.
		if utf8.Valid(raw) && string(dst) != want {
			t.Fatalf("Unquote(%q) = %q; encoding/json says %q", raw, dst, want)
		}
	})
}
