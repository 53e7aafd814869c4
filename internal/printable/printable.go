// Package printable makes untrusted text safe to show: in a terminal, a
// log line, a web page or meta.json. It removes C0 and C1 control
// characters (a raw ESC could rewrite a terminal), DEL, bidirectional
// controls (which reorder what a reader sees) and invalid UTF-8, and
// bounds the length.
//
// oauthfs applies it once, where text from outside enters (a provider's
// error code or description, a callback's query, an account name), and
// again where the command line prints a message.
package printable

import (
	"strings"
	"unicode/utf8"
)

// String returns s without control, bidirectional-control and invalid
// characters (each becomes a space, except tab and newline, which become
// a space too), at most max bytes long; a cut is marked with "…". A max of
// 0 or less means no bound. It never splits a UTF-8 sequence.
func String(s string, max int) string {
	if clean(s) && (max <= 0 || len(s) <= max) {
		return s
	}
	var b strings.Builder
	if max > 0 {
		b.Grow(min(len(s), max+len("…")))
	} else {
		b.Grow(len(s))
	}
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				r = ' '
			}
		}
		if unsafe(r) {
			r = ' '
		}
		if max > 0 && b.Len()+utf8.RuneLen(r) > max {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Code returns s reduced to the characters RFC 6749 allows in an error
// code (%x20-21 / %x23-5B / %x5D-7E), at most max bytes; anything else is
// dropped.
func Code(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s) && (max <= 0 || b.Len() < max); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// clean reports whether s needs no change apart from its length.
func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			if c >= 0x80 {
				return cleanUTF8(s[i:])
			}
			return false
		}
	}
	return true
}

func cleanUTF8(s string) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return false
			}
		}
		if unsafe(r) {
			return false
		}
	}
	return true
}

// unsafe reports whether r must not reach a reader: C0 and C1 controls,
// DEL, and the Unicode bidirectional controls (LRM, RLM, ALM, the
// embeddings, overrides and isolates).
func unsafe(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f,
		r >= 0x202a && r <= 0x202e,
		r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}
