package fusefs

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oauthfs/oauthfs/credential"
)

// Modes (docs/design.md): owner-only and read-only.
const (
	dirMode  = syscall.S_IFDIR | 0o500
	fileMode = syscall.S_IFREG | 0o400
	linkMode = syscall.S_IFLNK | 0o777
)

// dirKeep is how long the kernel may cache directories, names, links and
// the JSON files: they change only on a reload or a change event, which
// drop them from the kernel's caches at once.
const dirKeep = time.Hour

// The kernel keeps nothing until the filesystem watches its source (the
// first change, which says that anything may have changed, arrives when
// it does): a change before then would not reach it.

// dirKeep returns how long the kernel may keep directories and names now.
func (t *tree) dirKeep() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.live {
		return 0
	}
	return dirKeep
}

// dirFlags returns the flags of a directory opening: its listing is
// cached once the filesystem watches its source.
func (t *tree) dirFlags() uint32 {
	if t.dirKeep() == 0 {
		return 0
	}
	return fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
}

// tokenKeep returns how long the kernel may keep a token the source says
// may be kept for keep.
func (t *tree) tokenKeep(keep time.Duration) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.live {
		return 0
	}
	return keep
}

// Options configure a filesystem.
type Options struct {
	// Source serves the integrations and tokens. Required.
	Source Source
	// UID and GID own every node; only UID may use the mount.
	UID, GID uint32
	// Timeout bounds every call to the source made by a FUSE operation.
	// It should exceed the broker's request timeout by a little, so the
	// broker's own (more precise) error wins.
	Timeout time.Duration
	// Logger receives one line per failed operation; nil discards.
	Logger *slog.Logger
	// Context is the mount's lifetime: the filesystem watches its source
	// for changes until it ends. Nil means context.Background().
	Context context.Context
}

// tree is shared by every node of one mount. It is safe for concurrent
// use.
type tree struct {
	Options
	mounted  time.Time
	inos     inodes
	versions atomic.Uint64 // inode numbers of versioned files

	mu     sync.Mutex // guards the fields below
	root   *fs.Inode
	byName *fs.Inode
	integs map[string]*integ // by guid
	index  *jsonNode         // integrations.json now; nil: build at the next lookup
	docs   uint64            // counts every change, so that an index built across one is not kept
	listed map[string]string // guid -> name of the last listing, for reload diffs
	live   bool              // the filesystem watches its source
}

// integ is what the filesystem holds about one integration. Its fields
// are guarded by tree.mu.
type integ struct {
	dir *fs.Inode // the <guid> directory, once looked up
	// gen counts the changes of the integration's tokens: a token file of
	// an older generation is retired.
	gen uint64
	// cached holds the token versions the kernel may still cache, to be
	// dropped on a change.
	cached map[*tokenNode]bool
	meta   *jsonNode // meta.json now; nil: build at the next lookup
	docs   uint64    // counts every change, so that a meta.json built across one is not kept
}

// call runs f with the per-operation deadline, after checking the caller.
func (t *tree) call(ctx context.Context, op, id string, f func(ctx context.Context) error) syscall.Errno {
	if e := t.caller(ctx, op); e != 0 {
		return e
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	err := f(ctx)
	if err == nil {
		return 0
	}
	e := credential.Errno(err)
	lvl := slog.LevelDebug
	if e == syscall.EIO {
		lvl = slog.LevelWarn
	}
	t.Logger.Log(ctx, lvl, "operation failed", "op", op, "id", id, "errno", e.Error(), "err", err)
	return e
}

// caller refuses everyone but the mount's owner.
func (t *tree) caller(ctx context.Context, op string) syscall.Errno {
	if c, ok := fuse.FromContext(ctx); ok && c.Uid != t.UID {
		t.Logger.Debug("refused a caller who does not own the mount", "op", op, "uid", c.Uid)
		return syscall.EACCES
	}
	return 0
}

func (t *tree) attr(out *fuse.Attr, mode uint32, size int, mtime time.Time) {
	out.Mode = mode
	out.Size = uint64(size)
	out.Uid, out.Gid = t.UID, t.GID
	if mtime.IsZero() {
		mtime = t.mounted
	}
	out.SetTimes(nil, &mtime, &mtime)
	out.Nlink = 1
}

// entry fills out for a Lookup of ch, which the kernel may keep for keep.
func (t *tree) entry(ctx context.Context, ch *fs.Inode, out *fuse.EntryOut, keep time.Duration) {
	var a fuse.AttrOut
	if g, ok := ch.Operations().(fs.NodeGetattrer); ok {
		g.Getattr(ctx, nil, &a)
	}
	out.Attr = a.Attr
	out.SetAttrTimeout(a.Timeout())
	out.SetEntryTimeout(keep)
}

// state returns the integ of guid, creating it. Callers hold t.mu.
func (t *tree) stateLocked(guid string) *integ {
	st := t.integs[guid]
	if st == nil {
		st = &integ{cached: map[*tokenNode]bool{}}
		t.integs[guid] = st
	}
	return st
}

// Inode numbers: directories and links come from a registry of the guids
// the mount has seen (each guid gets a small id once, and its nodes derive
// their numbers from it, so no two integrations ever share one); each
// version of a file gets a number of its own from a counter above them.
const (
	inoByName   = 2
	inoBase     = 16 // ids start here, 8 numbers each
	versionBase = 1 << 40
)

// Node kinds within an integration's block of inode numbers.
const (
	kindDir = iota
	kindLink
	kindUnavailable // and kindUnavailable+fileExpiry: unavailableNode of each token file
)

// inodes is the guid registry behind inode numbers. It is safe for
// concurrent use.
type inodes struct {
	mu   sync.Mutex
	ids  map[string]uint64
	next uint64
}

// ino returns the inode number of the node of kind for guid.
func (t *tree) ino(guid string, kind int) uint64 {
	t.inos.mu.Lock()
	defer t.inos.mu.Unlock()
	id, ok := t.inos.ids[guid]
	if !ok {
		t.inos.next++
		id = t.inos.next
		t.inos.ids[guid] = id
	}
	return inoBase + id*8 + uint64(kind)
}

// version returns a new inode number for a version of a file.
func (t *tree) version() uint64 { return versionBase + t.versions.Add(1) }

// NewRoot returns the root node of a filesystem serving opts.Source.
func NewRoot(opts Options) fs.InodeEmbedder {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 12 * time.Second
	}
	if opts.Context == nil {
		opts.Context = context.Background()
	}
	t := &tree{Options: opts, mounted: time.Now(), inos: inodes{ids: map[string]uint64{}}, integs: map[string]*integ{}}
	return &rootDir{t: t}
}

// rootDir is the mount's root: by-name/, integrations.json and one
// directory per integration.
type rootDir struct {
	fs.Inode
	t *tree
}

var (
	_ = (fs.NodeOnAdder)((*rootDir)(nil))        // adds by-name/
	_ = (fs.NodeLookuper)((*rootDir)(nil))       // guid directories and integrations.json are dynamic
	_ = (fs.NodeOpendirHandler)((*rootDir)(nil)) // the listing, cached by the kernel
	_ = (fs.NodeGetattrer)((*rootDir)(nil))      // owner-only mode
)

func (r *rootDir) OnAdd(ctx context.Context) {
	t := r.t
	byName := r.NewPersistentInode(ctx, &byNameDir{t: t}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoByName})
	r.AddChild("by-name", byName, false)
	t.mu.Lock()
	t.root, t.byName = r.EmbeddedInode(), byName
	t.mu.Unlock()
}

// watch acts on the source's changes until the mount's context ends. It
// starts once the server is up: the kernel cannot be told of a change
// before.
func (r *rootDir) watch() {
	go r.t.watchClock()
	r.t.Source.Watch(r.t.Context, r.t.changed)
}

// watchClock drops everything the kernel keeps when the wall clock runs
// ahead of the monotonic clock (the machine was suspended, or the VM
// paused): neither the kernel's timeouts nor the filesystem's timers
// count that time, and tokens kept may be past their refresh time.
func (t *tree) watchClock() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-t.Context.Done():
			return
		case now := <-tick.C:
			if clockJumped(now.Round(0).Sub(last.Round(0)), now.Sub(last)) {
				t.Logger.Info("the clock jumped ahead (a suspend?); dropping what the kernel keeps")
				t.changed(credential.Change{Revoke: true})
			}
			last = now
		}
	}
}

// clockJumped reports whether wall, the wall-clock time that passed while
// the monotonic clock counted mono, shows a jump ahead.
func clockJumped(wall, mono time.Duration) bool { return wall-mono > 2*time.Second }

func (r *rootDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return r.t.dirAttr(out)
}

// dirAttr fills the attributes of a directory, which the kernel may cache
// until a change says otherwise.
func (t *tree) dirAttr(out *fuse.AttrOut) syscall.Errno {
	t.attr(&out.Attr, dirMode, 0, time.Time{})
	out.SetTimeout(t.dirKeep())
	return 0
}

func (r *rootDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t := r.t
	if e := t.caller(ctx, "lookup"); e != 0 {
		return nil, e
	}
	switch name {
	case "by-name":
		ch := r.GetChild(name)
		t.entry(ctx, ch, out, t.dirKeep())
		return ch, 0
	case "integrations.json":
		return t.indexFile(ctx, out)
	}
	// Only the canonical lowercase form names a directory, so that one
	// integration has exactly one path.
	if u, err := uuid.Parse(name); err != nil || u.String() != name {
		return nil, syscall.ENOENT
	}
	var in credential.Integration
	if e := t.call(ctx, "lookup", name, func(ctx context.Context) (err error) {
		in, err = t.Source.Integration(ctx, name)
		return err
	}); e != 0 {
		return nil, e
	}
	t.remember([]credential.Integration{in})
	ch := r.NewInode(ctx, &integrationDir{t: t, guid: name}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: t.ino(name, kindDir)})
	t.mu.Lock()
	t.stateLocked(name).dir = ch
	t.mu.Unlock()
	t.entry(ctx, ch, out, t.dirKeep())
	return ch, 0
}

func (r *rootDir) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	t := r.t
	var list []credential.Integration
	if e := t.call(ctx, "opendir", "/", func(ctx context.Context) (err error) {
		list, err = t.Source.Integrations(ctx)
		return err
	}); e != 0 {
		return nil, 0, e
	}
	t.remember(list)
	entries := []fuse.DirEntry{
		{Name: "by-name", Mode: syscall.S_IFDIR, Ino: inoByName},
		{Name: "integrations.json", Mode: syscall.S_IFREG},
	}
	for _, in := range list {
		entries = append(entries, fuse.DirEntry{Name: in.GUID, Mode: syscall.S_IFDIR, Ino: t.ino(in.GUID, kindDir)})
	}
	return &dirHandle{entries: entries}, t.dirFlags(), 0
}

// remember keeps the names the kernel may have cached entries for, so
// that a reload can drop the entries of names that came or went.
func (t *tree) remember(list []credential.Integration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.listed == nil {
		t.listed = map[string]string{}
	}
	for _, in := range list {
		t.listed[in.GUID] = in.Name
	}
}

// dirHandle is one opening of a directory: a snapshot of its entries,
// which the kernel caches (FOPEN_CACHE_DIR) until a change drops them.
type dirHandle struct {
	mu      sync.Mutex
	entries []fuse.DirEntry
	next    int
}

var (
	_ = (fs.FileReaddirenter)((*dirHandle)(nil)) // the entries
	_ = (fs.FileSeekdirer)((*dirHandle)(nil))    // rewinddir
)

func (d *dirHandle) Readdirent(context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.next >= len(d.entries) {
		return nil, 0
	}
	e := d.entries[d.next]
	d.next++
	return &e, 0
}

func (d *dirHandle) Seekdir(_ context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.next = int(min(off, uint64(len(d.entries))))
	return 0
}

// byNameDir holds one symlink per integration, named as configured.
type byNameDir struct {
	fs.Inode
	t *tree
}

var (
	_ = (fs.NodeLookuper)((*byNameDir)(nil))       // names come from the source
	_ = (fs.NodeOpendirHandler)((*byNameDir)(nil)) // the listing, cached by the kernel
	_ = (fs.NodeGetattrer)((*byNameDir)(nil))      // owner-only mode
)

func (d *byNameDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.t.dirAttr(out)
}

func (d *byNameDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var in credential.Integration
	if e := d.t.call(ctx, "lookup", "by-name/"+name, func(ctx context.Context) (err error) {
		in, err = d.t.Source.Integration(ctx, name)
		return err
	}); e != 0 {
		return nil, e
	}
	if in.Name != name { // a guid is not a name
		return nil, syscall.ENOENT
	}
	d.t.remember([]credential.Integration{in})
	// The link's number comes from its target's guid, so a name that
	// moves to another integration gets another inode (the kernel caches
	// a link's target per inode).
	ch := d.NewInode(ctx, &symlink{t: d.t, target: "../" + in.GUID}, fs.StableAttr{Mode: syscall.S_IFLNK, Ino: d.t.ino(in.GUID, kindLink)})
	d.t.entry(ctx, ch, out, d.t.dirKeep())
	return ch, 0
}

func (d *byNameDir) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	t := d.t
	var list []credential.Integration
	if e := t.call(ctx, "opendir", "by-name", func(ctx context.Context) (err error) {
		list, err = t.Source.Integrations(ctx)
		return err
	}); e != 0 {
		return nil, 0, e
	}
	t.remember(list)
	entries := make([]fuse.DirEntry, 0, len(list))
	for _, in := range list {
		entries = append(entries, fuse.DirEntry{Name: in.Name, Mode: syscall.S_IFLNK, Ino: t.ino(in.GUID, kindLink)})
	}
	return &dirHandle{entries: entries}, t.dirFlags(), 0
}

// symlink is by-name/<name>, pointing at ../<guid>.
type symlink struct {
	fs.Inode
	t      *tree
	target string
}

var (
	_ = (fs.NodeReadlinker)((*symlink)(nil)) // the target
	_ = (fs.NodeGetattrer)((*symlink)(nil))  // its length and owner
)

func (l *symlink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(l.target), 0
}

func (l *symlink) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	l.t.attr(&out.Attr, linkMode, len(l.target), time.Time{})
	out.SetTimeout(l.t.dirKeep())
	return 0
}

// integrationDir is <guid>/, holding access_token, expiry and meta.json.
type integrationDir struct {
	fs.Inode
	t    *tree
	guid string
}

var (
	_ = (fs.NodeLookuper)((*integrationDir)(nil))       // each file's current version
	_ = (fs.NodeOpendirHandler)((*integrationDir)(nil)) // the three names
	_ = (fs.NodeGetattrer)((*integrationDir)(nil))      // owner-only mode
)

func (d *integrationDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.t.dirAttr(out)
}

func (d *integrationDir) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{entries: []fuse.DirEntry{
		{Name: "access_token", Mode: syscall.S_IFREG},
		{Name: "expiry", Mode: syscall.S_IFREG},
		{Name: "meta.json", Mode: syscall.S_IFREG},
	}}, d.t.dirFlags(), 0
}

// Lookup returns the current version of a file. A token file's version
// holds the token the source hands out now, refreshed first when needed
// (refresh-on-read happens here, so errors surface at open), and the
// kernel may keep it until the token's refresh time. A version's size is
// exact from the start: a size that were only a bound would let the
// kernel pad a read with zeros when the file's attributes change while
// the read is under way.
func (d *integrationDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t := d.t
	if e := t.caller(ctx, "lookup"); e != 0 {
		return nil, e
	}
	var kind int
	switch name {
	case "access_token":
		kind = fileToken
	case "expiry":
		kind = fileExpiry
	case "meta.json":
		return t.metaFile(ctx, d, out)
	default:
		return nil, syscall.ENOENT
	}
	// The generation is taken before the token, so that a change in
	// between retires the version at once.
	t.mu.Lock()
	st := t.stateLocked(d.guid)
	st.dir = d.EmbeddedInode()
	n := &tokenNode{t: t, guid: d.guid, kind: kind, gen: st.gen}
	t.mu.Unlock()
	tok, keep := t.Source.Peek(d.guid)
	if tok == nil || keep <= cacheSlack {
		if e := t.call(ctx, "lookup", d.guid+"/"+name, func(ctx context.Context) (err error) {
			tok, keep, err = t.Source.Token(ctx, d.guid)
			return err
		}); e != 0 {
			return t.unavailable(ctx, d, name, kind, e, out)
		}
		n.touched = true // the source handed it out for this read
	}
	n.tok, n.until = tok, retireAt(t.tokenKeep(keep))
	ch := d.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: t.version()})
	t.track(n)
	t.entry(ctx, ch, out, lookupKeep(n.until))
	return ch, 0
}

// unavailable answers the lookup of a token file whose token cannot be
// had: for a credential's state (not signed in, expired, unavailable) the
// name resolves to an [unavailableNode], so that the kernel, not the
// state, decides a write-open (EROFS: the mount is read-only); stat and
// read give the state's errno. Other errors (the caller is not the
// owner, the integration is gone, the reader was interrupted) fail the
// lookup itself.
func (t *tree) unavailable(ctx context.Context, d *integrationDir, name string, kind int, e syscall.Errno, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch e {
	case syscall.ENOKEY, syscall.EKEYEXPIRED, syscall.EIO:
	default:
		return nil, e
	}
	// One node per file and integration, whatever the errno, so that the
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
	ch := d.NewInode(ctx, u, fs.StableAttr{Mode: syscall.S_IFREG, Ino: t.ino(d.guid, kindUnavailable+kind)})
	u.entry(out)
	return ch, 0
}

// unavailableNode is a token file whose token cannot be had now. It exists
// so that the name resolves (a write-open then fails with EROFS, decided
// by the kernel before the filesystem is asked), while getattr and read
// fail with the state's errno. The kernel keeps neither its name nor its
// attributes (both timeouts are zero, which the kernel takes as "always
// ask"), so every stat and every read asks the filesystem, and a read
// never sees an empty file: the kernel refreshes a file's attributes
// before reading past its size. An open for reading succeeds once the
// kernel has stopped sending OPEN (see tokenNode.Open); the first read
// then gives the errno.
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

// lookupSlack is how much sooner than a version is retired the kernel
// stops using the name that leads to it, so that a process that opens the
// file and reads it at once never meets a retired version.
const lookupSlack = time.Second

// retireAt returns when a version whose token may be kept for keep is
// retired.
//
// Times here are wall-clock times (without Go's monotonic reading), so
// that a comparison after a suspend sees the time that passed.
func retireAt(keep time.Duration) time.Time {
	now := time.Now().Round(0)
	if keep <= cacheSlack {
		return now
	}
	return now.Add(keep - cacheSlack)
}

// lookupKeep is how long the kernel may keep the name and attributes of a
// version retired at until.
func lookupKeep(until time.Time) time.Duration { return max(0, time.Until(until)-lookupSlack) }

// tokenNode is one version of access_token or expiry: one token, never
// changed, so a read of it never mixes two tokens. The kernel may cache a
// version until its token's refresh time; then, and on a change that
// revokes the integration's tokens, the version is retired: the kernel
// drops it, a new path lookup gets a new version, and a read through a
// file descriptor still open on the old one asks the source again. If the
// answer is the version's own token the read gets it (and the version
// lives on); otherwise it fails with the errno of the new state, or with
// ESTALE when there is another token: open the file again.
type tokenNode struct {
	fs.Inode
	t    *tree
	guid string
	kind int
	tok  *credential.Token

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
	fileToken = iota
	fileExpiry
)

func (n *tokenNode) name() string {
	if n.kind == fileExpiry {
		return "expiry"
	}
	return "access_token"
}

func (n *tokenNode) size() int {
	if n.kind == fileExpiry {
		return len(credential.FormatTime(n.tok.Expiry()))
	}
	return n.tok.Len()
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
	out.SetTimeout(lookupKeep(until))
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
	} else if first {
		t.Source.Touch(n.guid) // the kernel serves the next reads itself
	}
	tok := n.tok
	if n.kind == fileExpiry {
		return bytesResult([]byte(credential.FormatTime(tok.Expiry())), dest, off), 0
	}
	if off >= int64(tok.Len()) {
		return fuse.ReadResultData(nil), 0
	}
	b, release, err := tok.View()
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
	var keep time.Duration
	if e := t.call(ctx, "read", n.guid, func(ctx context.Context) (err error) {
		tok, keep, err = t.Source.Token(ctx, n.guid)
		return err
	}); e != 0 {
		return e
	}
	if !n.tok.Equal(tok) {
		return syscall.ESTALE
	}
	n.mu.Lock()
	n.gen, n.until, n.touched = gen, retireAt(t.tokenKeep(keep)), true
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
	t.mu.Lock()
	dir := t.integs[n.guid].dir
	t.mu.Unlock()
	if dir != nil {
		dir.NotifyEntry(n.name())
	}
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

// jsonNode is one version of a JSON document about the integrations:
// <guid>/meta.json or integrations.json. It is built once per change,
// never with a network call, and never changes: a change makes a new
// version.
type jsonNode struct {
	fs.Inode
	t   *tree
	doc []byte
	// passing is set on a version built across a change: it is served
	// once and not kept.
	passing bool
}

var (
	_ = (fs.NodeGetattrer)((*jsonNode)(nil)) // its exact size
	_ = (fs.NodeOpener)((*jsonNode)(nil))    // ENOSYS, like the token files
	_ = (fs.NodeFlusher)((*jsonNode)(nil))   // ENOSYS
	_ = (fs.NodeReader)((*jsonNode)(nil))    // the document
)

func (f *jsonNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.t.attr(&out.Attr, fileMode, len(f.doc), time.Time{})
	out.SetTimeout(f.keep())
	return 0
}

func (f *jsonNode) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, syscall.ENOSYS
}

func (f *jsonNode) Flush(context.Context, fs.FileHandle) syscall.Errno { return syscall.ENOSYS }

func (f *jsonNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if e := f.t.caller(ctx, "read"); e != 0 {
		return nil, e
	}
	return bytesResult(f.doc, dest, off), 0
}

// metaFile returns the current version of <guid>/meta.json.
func (t *tree) metaFile(ctx context.Context, d *integrationDir, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t.mu.Lock()
	st := t.stateLocked(d.guid)
	st.dir = d.EmbeddedInode()
	cur, gen := st.meta, st.docs
	t.mu.Unlock()
	if cur == nil {
		var doc []byte
		if e := t.call(ctx, "lookup", d.guid+"/meta.json", func(ctx context.Context) error {
			in, err := t.Source.Integration(ctx, d.guid)
			if err != nil {
				return err
			}
			doc, err = marshal(in)
			return err
		}); e != 0 {
			return nil, e
		}
		cur = &jsonNode{t: t, doc: doc}
		d.NewInode(ctx, cur, fs.StableAttr{Mode: syscall.S_IFREG, Ino: t.version()})
		t.mu.Lock()
		if st.docs == gen {
			st.meta = cur
		} else {
			cur.passing = true // a change came meanwhile: serve it, keep nothing
		}
		t.mu.Unlock()
	}
	return cur.entry(ctx, out)
}

// indexFile returns the current version of integrations.json.
func (t *tree) indexFile(ctx context.Context, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t.mu.Lock()
	cur, root, gen := t.index, t.root, t.docs
	t.mu.Unlock()
	if cur == nil {
		var doc []byte
		if e := t.call(ctx, "lookup", "integrations.json", func(ctx context.Context) error {
			list, err := t.Source.Integrations(ctx)
			if err != nil {
				return err
			}
			if list == nil {
				list = []credential.Integration{}
			}
			t.remember(list)
			doc, err = marshal(list)
			return err
		}); e != 0 {
			return nil, e
		}
		cur = &jsonNode{t: t, doc: doc}
		root.NewInode(ctx, cur, fs.StableAttr{Mode: syscall.S_IFREG, Ino: t.version()})
		t.mu.Lock()
		if t.docs == gen {
			t.index = cur
		} else {
			cur.passing = true
		}
		t.mu.Unlock()
	}
	return cur.entry(ctx, out)
}

// entry fills out for a lookup of f.
func (f *jsonNode) entry(ctx context.Context, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch := f.EmbeddedInode()
	f.t.entry(ctx, ch, out, f.keep())
	return ch, 0
}

// keep is how long the kernel may keep f.
func (f *jsonNode) keep() time.Duration {
	if f.passing {
		return 0
	}
	return f.t.dirKeep()
}

// marshal is JSON with two-space indentation and a final newline.
func marshal(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// notifyWait bounds how long a change waits for the kernel's
// invalidations. An invalidation waits for the FUSE operations that hold
// what it needs (a lookup in the same directory, a read of the same
// page), and one of those may be a reader waiting for the very refresh
// whose change this is. The versions are retired before, so a read that
// reaches the filesystem meanwhile sees the change anyway.
const notifyWait = 200 * time.Millisecond

// changed drops from the kernel's caches what a change made stale, before
// the source completes the change. It runs beside the FUSE server, never
// inside a FUSE operation.
//
// A change that revokes the tokens first retires every version made so
// far: from then on a read that reaches the filesystem through a file
// opened before the change asks the source again. Then the kernel drops
// those versions' pages, so that every read reaches the filesystem, and
// the names, so that an open gets a new version.
func (t *tree) changed(c credential.Change) {
	t.mu.Lock()
	t.live = !c.Unwatched
	t.docs++
	root, byName := t.root, t.byName
	var guids []string
	if c.GUID != "" {
		guids = []string{c.GUID}
	} else {
		for g := range t.integs {
			guids = append(guids, g)
		}
	}
	var dirs []*fs.Inode
	var cached []*tokenNode
	for _, g := range guids {
		st := t.stateLocked(g)
		st.meta = nil
		st.docs++
		if st.dir != nil {
			dirs = append(dirs, st.dir)
		}
		if c.Revoke {
			st.gen++
			for n := range st.cached {
				cached = append(cached, n)
			}
			clear(st.cached)
		}
	}
	t.index = nil
	var names map[string]string
	if c.GUID == "" {
		names, t.listed = t.listed, nil
	}
	t.mu.Unlock()

	var wg sync.WaitGroup
	for _, n := range cached {
		wg.Go(func() { n.EmbeddedInode().NotifyContent(0, 0) })
	}
	wg.Go(func() {
		for _, d := range dirs {
			d.NotifyEntry("access_token")
			d.NotifyEntry("expiry")
			d.NotifyEntry("meta.json")
		}
		if root == nil {
			return
		}
		root.NotifyEntry("integrations.json")
		if c.GUID != "" {
			return
		}
		root.NotifyContent(0, 0)
		byName.NotifyContent(0, 0)
		for g, name := range names {
			root.NotifyEntry(g)
			byName.NotifyEntry(name)
		}
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(notifyWait):
		t.Logger.Debug("the kernel's invalidations wait for operations under way; going on", "guid", c.GUID)
	}
}
