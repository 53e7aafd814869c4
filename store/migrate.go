package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Users returns the uids that have credentials in the file store, in
// either format, sorted.
func (s *File) Users() ([]int, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("store: read state_dir: %w", err)
	}
	seen := map[int]bool{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			if uid, err := strconv.Atoi(name); err == nil {
				if creds, _ := filepath.Glob(filepath.Join(s.dir, name, "*.cred")); len(creds) > 0 {
					seen[uid] = true
				}
			}
		} else if n, ok := strings.CutSuffix(name, ".store"); ok {
			if uid, err := strconv.Atoi(n); err == nil {
				seen[uid] = true
			}
		}
	}
	uids := make([]int, 0, len(seen))
	for uid := range seen {
		uids = append(uids, uid)
	}
	sort.Ints(uids)
	return uids, nil
}

// Moved says what Migrate did with one record.
type Moved struct {
	User, GUID string
	// Kept is set when the database already held a record at least as
	// new (its access token obtained no earlier), which was left alone.
	Kept bool
}

// Migrate copies every record of the file store from into the shared
// store to, keying users by the name name returns for their uid (users
// without one are an error: the database keys users by name). A record
// the database holds already is overwritten only by a newer one: one
// whose access token was obtained later. The file store is left as it
// is (beyond the conversion of a first-format store that any load does).
func Migrate(ctx context.Context, from *File, to Shared, name func(uid int) (string, bool)) ([]Moved, error) {
	uids, err := from.Users()
	if err != nil {
		return nil, err
	}
	var out []Moved
	for _, uid := range uids {
		n, ok := name(uid)
		if !ok || n == "" {
			return out, fmt.Errorf("store: uid %d has credentials in the state directory but no user name on this host; the database keys users by name", uid)
		}
		recs, err := from.Load(ctx, User{UID: uid, Name: n})
		if err != nil {
			return out, err
		}
		for _, r := range recs {
			m := Moved{User: n, GUID: r.GUID}
			err := to.Update(ctx, User{UID: uid, Name: n}, r.GUID, false, func(cur *Record) (*Record, error) {
				if cur != nil && !obtained(r).After(obtained(*cur)) {
					m.Kept = true
					return nil, nil
				}
				return &r, nil
			})
			if err != nil {
				return out, err
			}
			out = append(out, m)
		}
	}
	return out, nil
}

// obtained is when r's access token was obtained, or zero.
func obtained(r Record) time.Time {
	if r.Access != nil {
		return r.Access.Obtained()
	}
	return time.Time{}
}
