package fusefs

// Token files: access_token, expiry, id_token and token.json, one
// immutable version per token, and the node that stands for a token that
// cannot be had.

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oauthfs/oauthfs/credential"
)

// unavailable answers the lookup of a token file whose token cannot be
// had: for a credential's state (not signed in, expired, unavailable, no
// ID token) the name resolves to an [unavailableNode], so that the
// kernel, not the state, decides a write-open (EROFS: the mount is
// read-only); stat and read give the state's errno. Other errors (the
// caller is not the owner, the integration is gone, the reader was
// interrupted) fail the lookup itself. key names the directory (see
// tokenDir) for the node's inode number.
func (t *tree) unavailable(ctx context.Context, d *fs.Inode, key, name string, kind int, e syscall.Errno, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch e {
	case syscall.ENOKEY, syscall.EKEYEXPIRED, syscall.EIO, syscall.ENODATA:
	default:
		return nil, e
	}
	// One node per file and directory, whatever the errno, so that the
	// kernel's revalidation of the name finds the same node and does not
	// look it up twice.
	if ch := d.GetChild(name); ch != nil {
		if u, ok := ch.Operations().(*unavailableNode); ok {
			u.errno.Store(uint32(e))
			u.entry(out)
			return ch, 0
		}
	}
	u := &unavailableNode{t: t}
	u.errno.Store(uint32(e))
	ch := d.NewInode(ctx, u, fs.StableAttr{Mode: syscall.S_IFREG, Ino: t.ino(key, kindUnavailable+kind)})
	u.entry(out)
	return ch, 0
}

// unavailableNode is a token file whose token cannot be had now. It exists
// so that the name resolves (a write-open then fails with EROFS, decided
// by the kernel before the filesystem is asked), while getattr and read
// fail with the state's errno. The kernel keeps neither its name nor its
// attributes (both timeouts are zero, which the kernel takes as "always
// ask"), and the mount checks permissions in the kernel
// (default_permissions), which refreshes attributes it does not keep
// before it lets an open through: so an open for reading, a stat and a
// read each ask the filesystem and fail with the errno.
type unavailableNode struct {
	fs.Inode
	t     *tree
	errno atomic.Uint32 // the errno of the latest lookup
}

var (
	_ = (fs.NodeGetattrer)((*unavailableNode)(nil)) // the errno
	_ = (fs.NodeOpener)((*unavailableNode)(nil))    // ENOSYS, like the token files
	_ = (fs.NodeReader)((*unavailableNode)(nil))    // the errno
)

// entry fills out for a lookup of the node: a file of size 0 that the
// kernel must ask about again (timeouts of zero).
func (u *unavailableNode) entry(out *fuse.EntryOut) {
	u.t.attr(&out.Attr, fileMode, 0, time.Time{})
	out.SetAttrTimeout(0)
	out.SetEntryTimeout(0)
}

// Getattr reports the state's errno.
func (u *unavailableNode) Getattr(ctx context.Context, _ fs.FileHandle, _ *fuse.AttrOut) syscall.Errno {
	if e := u.t.caller(ctx, "getattr"); e != 0 {
		return e
	}
	return syscall.Errno(u.errno.Load())
}

func (u *unavailableNode) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, syscall.ENOSYS
}

func (u *unavailableNode) Read(ctx context.Context, _ fs.FileHandle, _ []byte, _ int64) (fuse.ReadResult, syscall.Errno) {
	if e := u.t.caller(ctx, "read"); e != 0 {
		return nil, e
	}
	return nil, syscall.Errno(u.errno.Load())
}

// cacheSlack is how much sooner than its refresh time a version is
// retired: the timer that drops it from the kernel's caches may fire a
// little late.
const cacheSlack = 100 * time.Millisecond

// retireAt returns when a version whose token may be kept until until is
// retired: cacheSlack sooner, and now if that is past.
//
// Times here are wall-clock times (without Go's monotonic reading), so
// that a comparison after a suspend sees the time that passed.
func retireAt(until time.Time) time.Time {
	now := time.Now().Round(0)
	if at := until.Round(0).Add(-cacheSlack); at.After(now) {
		return at
	}
	return now
}

// tickSlack is how long the kernel may keep a name past the timeout it
// was given: it times names in ticks, rounding up (two ticks are 20 ms at
// HZ=100, the coarsest).
const tickSlack = 25 * time.Millisecond

// lookupKeep is how long the kernel may keep the name and attributes of
// a version of tok retired at until: until just before the source stops
// handing tok out to new readers, credential.HandOverSlack before its
// refresh time (cacheSlack after until), so that a lookup from then on
// gets the next token from the source. Every mount (and every host of a
// cluster) switches at that moment, by the source's clock: a name the
// kernel kept a tick longer would serve tok after another mount's reader
// already had the next one, so the name ends tickSlack sooner, and the
// few opens in between ask the source. A process that opened the file
// just before still has the rest of the slack to read it before the
// version retires. (A name kept for much less would make every open in
// between ask the source and get tok again, kept for no time.)
func lookupKeep(tok *credential.Token, until time.Time) time.Duration {
	return max(0, time.Until(until)+cacheSlack-credential.HandOverSlack(tok)-tickSlack)
}

// tokenNode is one version of a token file (access_token, expiry,
// id_token or token.json, of the main token or of a variant): one token,
// never changed, so a read of it never mixes two tokens, and the files
// of one version agree. The kernel may cache a
// version until its token's refresh time; then, and on a change that
// revokes the integration's tokens, the version is retired: the kernel
// drops it, a new path lookup gets a new version, and a read through a
// file descriptor still open on the old one asks the source again. If the
// answer is the version's own token the read gets it (and the version
// lives on); otherwise it fails with the errno of the new state, or with
// ESTALE when there is another token: open the file again.
type tokenNode struct {
	fs.Inode
	t       *tree
	guid    string
	variant string    // "": the main token
	parent  *fs.Inode // the directory whose entry leads to the version
	kind    int
	tok     *credential.Token // the access token of the version
	data    *credential.Token // what the file shows: tok, its ID token or its document; nil for expiry

	revalidating sync.Mutex // held while a read of a retired version asks the source

	mu      sync.Mutex  // guards the fields below
	gen     uint64      // the integration's generation the version belongs to
	until   time.Time   // when the version retires
	touched bool        // the source heard of a read of tok
	timer   *time.Timer // drops the version from the kernel's caches at until
	stamp   uint64      // counts the trackings; the timer of the latest acts
}

var (
	_ = (fs.NodeGetattrer)((*tokenNode)(nil))   // size and times, without a network call
	_ = (fs.NodeOpener)((*tokenNode)(nil))      // ENOSYS: the kernel stops sending OPEN
	_ = (fs.NodeFlusher)((*tokenNode)(nil))     // ENOSYS: and FLUSH
	_ = (fs.NodeReader)((*tokenNode)(nil))      // refresh-on-read, then the version's bytes
	_ = (fs.NodeOnForgetter)((*tokenNode)(nil)) // stop tracking
)

// Files of a token version.
const (
	fileToken    = iota // access_token
	fileExpiry          // expiry
	fileIDToken         // id_token
	fileDocument        // token.json
)

// tokenFiles names each file of a token version.
var tokenFiles = [...]string{fileToken: "access_token", fileExpiry: "expiry", fileIDToken: "id_token", fileDocument: "token.json"}

func (n *tokenNode) name() string { return tokenFiles[n.kind] }

// dataOf returns what file kind of token tok shows (nil for expiry), or
// the errno of a file that has nothing to show: ENODATA for an id_token
// when the provider sent none.
func dataOf(tok *credential.Token, kind int) (*credential.Token, syscall.Errno) {
	switch kind {
	case fileExpiry:
		return nil, 0
	case fileIDToken:
		if tok.ID() == nil {
			return nil, syscall.ENODATA
		}
		return tok.ID(), 0
	case fileDocument:
		doc, err := tok.Document()
		if err != nil {
			return nil, syscall.EIO
		}
		return doc, 0
	}
	return tok, 0
}

func (n *tokenNode) size() int {
	if n.kind == fileExpiry {
		return len(credential.FormatTime(n.tok.Expiry()))
	}
	return n.data.Len()
}

// Getattr reports the version's exact size, and when its token was
// obtained as its modification time. It never asks the source.
func (n *tokenNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if e := n.t.caller(ctx, "getattr"); e != 0 {
		return e
	}
	n.mu.Lock()
	until := n.until
	n.mu.Unlock()
	n.t.attr(&out.Attr, fileMode, n.size(), n.tok.Obtained())
	out.SetTimeout(lookupKeep(n.tok, until))
	return 0
}

// Open returns ENOSYS: from then on the kernel opens every file of the
// mount without asking (and keeps their pages cached), which is what
// makes a read of a cached token as fast as tmpfs.
func (n *tokenNode) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, syscall.ENOSYS
}

// Flush returns ENOSYS, so that close(2) does not reach the server.
func (n *tokenNode) Flush(context.Context, fs.FileHandle) syscall.Errno { return syscall.ENOSYS }

func (n *tokenNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	t := n.t
	if e := t.caller(ctx, "read"); e != 0 {
		return nil, e
	}
	if ok, first := n.current(); !ok {
		if e := n.revalidate(ctx); e != 0 {
			return nil, e
		}
	} else if first && n.variant == "" {
		t.Source.Touch(n.guid) // the kernel serves the next reads itself
	}
	if n.kind == fileExpiry {
		return bytesResult([]byte(credential.FormatTime(n.tok.Expiry())), dest, off), 0
	}
	data := n.data
	if off >= int64(data.Len()) {
		return fuse.ReadResultData(nil), 0
	}
	b, release, err := data.View()
	if err != nil {
		t.Logger.Warn("operation failed", "op", "read", "id", n.guid, "errno", syscall.EIO.Error(), "err", err)
		return nil, syscall.EIO
	}
	end := min(int64(len(b)), off+int64(len(dest)))
	return &lockedResult{data: b[off:end], release: release}, 0
}

// current reports whether the version may be served without asking the
// source (it is not retired), and whether this is the first read of it.
func (n *tokenNode) current() (ok, first bool) {
	gen := n.t.gen(n.guid)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gen != gen || !time.Now().Before(n.until) {
		return false, false
	}
	first, n.touched = !n.touched, true
	return true, first
}

// revalidate asks the source for the token of a retired version,
// refreshing it first when needed: if it is still the version's own token
// the version lives on, until the new time the source gives; otherwise
// the read fails. Concurrent reads share one answer.
func (n *tokenNode) revalidate(ctx context.Context) syscall.Errno {
	n.revalidating.Lock()
	defer n.revalidating.Unlock()
	if ok, _ := n.current(); ok {
		return 0 // another read revalidated it meanwhile
	}
	t := n.t
	gen := t.gen(n.guid) // a change during the call retires the answer
	var tok *credential.Token
	var until time.Time
	if e := t.call(ctx, "read", n.guid, func(ctx context.Context) (err error) {
		tok, until, err = t.Source.Token(ctx, n.guid, n.variant)
		return err
	}); e != 0 {
		return e
	}
	if !n.tok.Equal(tok) {
		return syscall.ESTALE
	}
	n.mu.Lock()
	n.gen, n.until, n.touched = gen, retireAt(t.keepUntil(until)), true
	n.mu.Unlock()
	t.track(n)
	return 0
}

func (n *tokenNode) OnForget() {
	n.mu.Lock()
	if n.timer != nil {
		n.timer.Stop()
	}
	n.mu.Unlock()
	n.t.untrack(n)
}

// gen returns the generation of guid's integration: it grows with every
// change.
func (t *tree) gen(guid string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stateLocked(guid).gen
}

// track records a version whose token the kernel may cache, and drops it
// from the kernel's caches at its refresh time: its pages (so that a file
// descriptor still open on it reads again, and learns it is retired) and
// its name (so that a new open gets the next version). A change drops it
// sooner.
func (t *tree) track(n *tokenNode) {
	ch := n.EmbeddedInode()
	t.mu.Lock()
	st := t.stateLocked(n.guid)
	n.mu.Lock()
	wait := max(0, time.Until(n.until))
	if st.gen == n.gen {
		st.cached[n] = true
	} else {
		// A change came while the token was on its way, and has
		// dropped what it found: drop this one at once too (after the
		// read that brought it, which holds the page being dropped).
		wait = 0
	}
	if n.timer != nil {
		n.timer.Stop()
	}
	n.stamp++
	stamp := n.stamp
	n.timer = time.AfterFunc(wait, func() { t.retire(n, ch, stamp) })
	n.mu.Unlock()
	t.mu.Unlock()
}

// retire drops a version from the kernel's caches at its retirement
// time, and forgets it, unless a read brought it back meanwhile (track
// again, with a later stamp): then the later timer does.
func (t *tree) retire(n *tokenNode, ch *fs.Inode, stamp uint64) {
	if !n.stamped(stamp) {
		return
	}
	ch.NotifyContent(0, 0)
	n.parent.NotifyEntry(n.name())
	t.mu.Lock()
	defer t.mu.Unlock()
	if n.stamped(stamp) {
		delete(t.integs[n.guid].cached, n)
	}
}

// stamped reports whether stamp is the version's latest tracking.
func (n *tokenNode) stamped(stamp uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stamp == stamp
}

// untrack forgets a version the kernel dropped.
func (t *tree) untrack(n *tokenNode) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.integs[n.guid]; st != nil {
		delete(st.cached, n)
	}
}

// lockedResult hands the kernel token bytes straight from the token's
// locked buffer: go-fuse writes them to /dev/fuse and then calls Done, so
// they are never copied into its own buffers, which it recycles unwiped.
type lockedResult struct {
	data    []byte
	release func()
}

var _ = (fuse.ReadResult)((*lockedResult)(nil)) // a read without a copy

func (r *lockedResult) Bytes([]byte) ([]byte, fuse.Status) { return r.data, fuse.OK }
func (r *lockedResult) Size() int                          { return len(r.data) }
func (r *lockedResult) Done()                              { r.release() }

// bytesResult is the part of b a read at off of len(dest) bytes returns.
func bytesResult(b, dest []byte, off int64) fuse.ReadResult {
	if off >= int64(len(b)) {
		return fuse.ReadResultData(nil)
	}
	end := min(int64(len(b)), off+int64(len(dest)))
	return fuse.ReadResultData(b[off:end])
}
