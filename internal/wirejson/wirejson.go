// Package wirejson writes and reads the JSON strings that carry tokens over
// the session socket without making Go strings of them: the bytes go from
// one caller-owned buffer to another, so that the caller can wipe both.
// encoding/json cannot do this: it decodes strings into Go strings, which
// are never wiped.
package wirejson

import (
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// AppendQuoted appends s to b as a JSON string.
func AppendQuoted(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// QuotedLen returns the length of AppendQuoted's output for s, so that a
// caller can size a locked buffer exactly.
func QuotedLen(s []byte) int {
	n := 2
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			n += 2
		case c < 0x20 || c == 0x7f:
			n += 6
		default:
			n++
		}
	}
	return n
}

// errSyntax is returned for a JSON string that is malformed.
var errSyntax = errors.New("malformed JSON string")

// Bytes that are not valid UTF-8 pass through unchanged: tokens are opaque.

// UnquotedLen returns the length of the value of the JSON string literal
// raw (quotes included) once unescaped, or an error when raw is not one.
func UnquotedLen(raw []byte) (int, error) {
	n := 0
	err := unquote(raw, func(b []byte) { n += len(b) })
	return n, err
}

// Unquote writes the value of the JSON string literal raw (quotes
// included) into dst, which must be UnquotedLen(raw) bytes long.
func Unquote(dst, raw []byte) error {
	n := 0
	return unquote(raw, func(b []byte) { n += copy(dst[n:], b) })
}

// unquote calls emit with the pieces of raw's value, in order. Small
// pieces are written through a stack array, never the heap.
func unquote(raw []byte, emit func([]byte)) error {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return errSyntax
	}
	s := raw[1 : len(raw)-1]
	var tmp [4]byte
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c < 0x20:
			return errSyntax
		case c != '\\':
			j := i
			for j < len(s) && s[j] != '\\' && s[j] != '"' && s[j] >= 0x20 {
				j++
			}
			emit(s[i:j])
			i = j
			continue
		}
		if i+1 >= len(s) {
			return errSyntax
		}
		switch e := s[i+1]; e {
		case '"', '\\', '/':
			tmp[0] = e
			emit(tmp[:1])
			i += 2
		case 'b', 'f', 'n', 'r', 't':
			tmp[0] = map[byte]byte{'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}[e]
			emit(tmp[:1])
			i += 2
		case 'u':
			r, ok := hex4(s[i+2:])
			if !ok {
				return errSyntax
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2, ok := rune(-1), false
				if i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
					r2, ok = hex4(s[i+2:])
				}
				if ok {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						r = d
						i += 6
					} else {
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			emit(tmp[:utf8.EncodeRune(tmp[:], r)])
		default:
			return errSyntax
		}
	}
	return nil
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
