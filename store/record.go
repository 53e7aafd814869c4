package store

// The record codec both stores share (docs/store-format.md): what a
// sealed record holds, in bytes.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// maxText bounds the text a record holds (scopes, error, account): it is
// clipped to this when written.
const maxText = 4 << 10

// encodeRecord writes r into a new locked buffer, which the caller
// destroys. Layout, big-endian (docs/store-format.md): u8 status, i64
// expiry, i64 obtained (unix ns, 0 = none), bytes32 access, bytes32
// refresh, str16 scopes, str16 error, str16 account; then, only when the
// access token has an ID token or a type other than Bearer, bytes32
// id_token, i64 its expiry, str16 token_type (a record without them is
// byte for byte what earlier versions wrote). Text is clipped to
// maxText, so no accepted value can make encoding fail.
func encodeRecord(r Record) (*secmem.Buffer, error) {
	var access, refresh, id *secmem.Buffer
	var err error
	var expiry, obtained, idExpiry time.Time
	extras, tokenType := false, ""
	if r.Access != nil {
		if access, err = r.Access.Open(); err != nil {
			return nil, err
		}
		defer access.Destroy()
		expiry, obtained = r.Access.Expiry(), r.Access.Obtained()
		if t := r.Access.ID(); t != nil {
			if id, err = t.Open(); err != nil {
				return nil, err
			}
			defer id.Destroy()
			idExpiry = t.Expiry()
		}
		tokenType = clip(r.Access.Type())
		extras = id != nil || tokenType != "Bearer"
	}
	if r.Refresh != nil {
		if refresh, err = secmem.Open(r.Refresh); err != nil {
			return nil, err
		}
		defer refresh.Destroy()
	}
	scopes, lastErr, account := clip(strings.Join(r.Scopes, " ")), clip(r.Error), clip(r.Account)
	size := 1 + 8 + 8 + 4 + bufLen(access) + 4 + bufLen(refresh) + 2 + len(scopes) + 2 + len(lastErr) + 2 + len(account)
	if extras {
		size += 4 + bufLen(id) + 8 + 2 + len(tokenType)
	}
	out, err := secmem.NewBuffer(size)
	if err != nil {
		return nil, err
	}
	b := out.Bytes()[:0]
	b = append(b, statusByte[r.Status])
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(expiry)))
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(obtained)))
	b = appendBytes32(b, access)
	b = appendBytes32(b, refresh)
	b = appendStr16(b, scopes)
	b = appendStr16(b, lastErr)
	b = appendStr16(b, account)
	if extras {
		b = appendBytes32(b, id)
		b = binary.BigEndian.AppendUint64(b, uint64(unixNano(idExpiry)))
		b = appendStr16(b, tokenType)
	}
	if len(b) != size { // cannot happen: every length above is the clipped one
		out.Destroy()
		return nil, fmt.Errorf("store: encode credentials: size %d, want %d", len(b), size)
	}
	return out, nil
}

// clip bounds stored text to maxText bytes, at a UTF-8 boundary.
func clip(s string) string {
	if len(s) <= maxText {
		return s
	}
	s = s[:maxText]
	for len(s) > 0 && s[len(s)-1]&0xc0 == 0x80 {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0xc0 {
		s = s[:len(s)-1]
	}
	return s
}

var statusByte = map[credential.Status]byte{credential.StatusSignedIn: 1, credential.StatusExpired: 2, credential.StatusError: 3}

func bufLen(b *secmem.Buffer) int {
	if b == nil {
		return 0
	}
	return b.Size()
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func appendStr16(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBytes32(b []byte, lb *secmem.Buffer) []byte {
	if lb == nil {
		return binary.BigEndian.AppendUint32(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(lb.Size()))
	return append(b, lb.Bytes()...)
}

// decodeRecord parses what encodeRecord wrote. Token bytes go straight
// from the locked plaintext into new enclaves.
func decodeRecord(p []byte) (Record, error) {
	d := decoder{p: p}
	var r Record
	sb := d.u8()
	r.Status = statusOf(sb)
	expiry, obtained := fromUnixNano(int64(d.u64())), fromUnixNano(int64(d.u64()))
	access, refresh := d.bytes32(), d.bytes32()
	r.Scopes = strings.Fields(d.str16())
	r.Error = d.str16()
	r.Account = d.str16()
	var id []byte
	var idExpiry time.Time
	tokenType := ""
	if d.err == nil && len(d.p) != 0 {
		id = d.bytes32()
		idExpiry = fromUnixNano(int64(d.u64()))
		tokenType = d.str16()
	}
	if d.err == nil && r.Status == "" {
		d.err = fmt.Errorf("unknown status %d", sb)
	}
	if d.err == nil && len(d.p) != 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return Record{}, d.err
	}
	x := credential.Extras{Type: tokenType}
	if len(id) > 0 && len(access) > 0 {
		t, err := credential.NewToken(append([]byte(nil), id...), idExpiry, obtained)
		if err != nil {
			return Record{}, err
		}
		x.ID = t
	}
	return r, r.seal(access, refresh, expiry, obtained, x)
}

// seal puts copies of the token bytes into r's enclaves, the access
// token with the extras x and r's scopes.
func (r *Record) seal(access, refresh []byte, expiry, obtained time.Time, x credential.Extras) error {
	if len(access) > 0 {
		t, err := credential.NewToken(append([]byte(nil), access...), expiry, obtained)
		if err != nil {
			return err
		}
		x.Scopes = r.Scopes
		r.Access = t.With(x)
	}
	if len(refresh) > 0 {
		e, err := secmem.Seal(append([]byte(nil), refresh...))
		if err != nil {
			return err
		}
		r.Refresh = e
	}
	return nil
}

func statusOf(b byte) credential.Status {
	for s, v := range statusByte {
		if v == b {
			return s
		}
	}
	return ""
}

// decodeV1 parses the first format: u32 count; per record: str16 guid, u8
// status, i64 expiry, i64 obtained, bytes32 access, bytes32 refresh, str16
// scopes, str16 error.
func decodeV1(p []byte) ([]Record, error) {
	d := decoder{p: p}
	n := d.u32()
	if d.err == nil && n > 1<<16 {
		d.err = errors.New("implausible record count")
	}
	var recs []Record
	for i := uint32(0); i < n && d.err == nil; i++ {
		r := Record{GUID: d.str16()}
		sb := d.u8()
		r.Status = statusOf(sb)
		expiry, obtained := fromUnixNano(int64(d.u64())), fromUnixNano(int64(d.u64()))
		access, refresh := d.bytes32(), d.bytes32()
		r.Scopes = strings.Fields(d.str16())
		r.Error = d.str16()
		if d.err != nil {
			break
		}
		if u, err := uuid.Parse(r.GUID); err != nil || u.String() != r.GUID {
			return nil, fmt.Errorf("record %d: bad guid", i)
		}
		if r.Status == "" {
			return nil, fmt.Errorf("record %d: unknown status %d", i, sb)
		}
		if err := r.seal(access, refresh, expiry, obtained, credential.Extras{}); err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	if d.err == nil && len(d.p) != 0 {
		d.err = errors.New("trailing bytes")
	}
	return recs, d.err
}

type decoder struct {
	p   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.p) {
		d.err = errors.New("truncated record")
		return nil
	}
	b := d.p[:n]
	d.p = d.p[n:]
	return b
}

func (d *decoder) u8() byte {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) str16() string {
	b := d.take(2)
	if b == nil {
		return ""
	}
	return string(d.take(int(binary.BigEndian.Uint16(b))))
}

func (d *decoder) bytes32() []byte {
	b := d.take(4)
	if b == nil {
		return nil
	}
	n := binary.BigEndian.Uint32(b)
	if n > credential.MaxTokenLen {
		d.err = errors.New("token longer than the limit")
		return nil
	}
	return d.take(int(n))
}
