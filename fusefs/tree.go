package fusefs

// The tree: what every node of one mount shares (options, inode numbers,
// the state of each integration), and how a change reaches the kernel.

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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

// dirKeep returns how long the kernel may keep directories and names now.
// The kernel keeps nothing until the filesystem watches its source (the
// first change, which says that anything may have changed, arrives when
// it does): a change before then would not reach it.
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

// keepUntil returns until when the kernel may keep a token the source
// says may be kept until until: not at all (the zero time) before the
// filesystem watches its source.
func (t *tree) keepUntil(until time.Time) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.live {
		return time.Time{}
	}
	return until
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
	// inoOffset is added to every inode number of the tree: each view of
	// a system mount has a block of numbers of its own.
	inoOffset uint64
	// slots, when set, bounds the calls to the source under way at once
	// (a system mount's per-user cap); used is when a caller last came
	// (Unix nanoseconds), so that an idle view can be dropped.
	slots chan struct{}
	used  atomic.Int64

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
	dir      *fs.Inode            // the <guid> directory, once looked up
	tokens   *fs.Inode            // <guid>/tokens, once looked up
	variants map[string]*fs.Inode // <guid>/tokens/<variant>, once looked up
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
	if t.slots != nil {
		select {
		case t.slots <- struct{}{}:
			defer func() { <-t.slots }()
		case <-ctx.Done():
			t.Logger.Warn("operation failed: too many operations of this user under way", "op", op, "id", id, "uid", t.UID)
			return credential.Errno(ctx.Err())
		}
	}
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
	t.used.Store(time.Now().UnixNano())
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

// stateLocked returns the integ of guid, creating it. Callers hold t.mu.
func (t *tree) stateLocked(guid string) *integ {
	st := t.integs[guid]
	if st == nil {
		st = &integ{cached: map[*tokenNode]bool{}, variants: map[string]*fs.Inode{}}
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
	kindUnavailable // to kindUnavailable+fileDocument: unavailableNode of each token file
)

// inodes is the registry of names behind inode numbers. It is safe for
// concurrent use.
type inodes struct {
	mu   sync.Mutex
	ids  map[string]uint64
	next uint64
}

// id returns key's number: 1 for the first key it is asked for, 2 for
// the next, and the same number every time for one key.
func (in *inodes) id(key string) uint64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	id, ok := in.ids[key]
	if !ok {
		in.next++
		id = in.next
		in.ids[key] = id
	}
	return id
}

// ino returns the inode number of the node of kind for guid.
func (t *tree) ino(guid string, kind int) uint64 {
	return t.inoOffset + inoBase + t.inos.id(guid)*8 + uint64(kind)
}

// version returns a new inode number for a version of a file.
func (t *tree) version() uint64 { return t.inoOffset + versionBase + t.versions.Add(1) }

// NewRoot returns the root node of a filesystem serving opts.Source.
func NewRoot(opts Options) fs.InodeEmbedder {
	return &rootDir{t: newTree(opts)}
}

// defaults fills in the options both kinds of mount share: a logger that
// discards, a 12 s bound on each call to the source, and a context that
// never ends.
func defaults(log **slog.Logger, timeout *time.Duration, ctx *context.Context) {
	if *log == nil {
		*log = slog.New(slog.DiscardHandler)
	}
	if *timeout == 0 {
		*timeout = 12 * time.Second
	}
	if *ctx == nil {
		*ctx = context.Background()
	}
}

// newTree returns the state shared by the nodes of a tree serving
// opts.Source.
func newTree(opts Options) *tree {
	defaults(&opts.Logger, &opts.Timeout, &opts.Context)
	return &tree{Options: opts, mounted: time.Now(), inos: inodes{ids: map[string]uint64{}}, integs: map[string]*integ{}}
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

// dirAttr fills the attributes of a directory, which the kernel may cache
// until a change says otherwise.
func (t *tree) dirAttr(out *fuse.AttrOut) syscall.Errno {
	t.attr(&out.Attr, dirMode, 0, time.Time{})
	out.SetTimeout(t.dirKeep())
	return 0
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
	var dirs, tokens, variants []*fs.Inode
	type entry struct {
		dir  *fs.Inode
		name string
	}
	var variantNames []entry // each variant's name in its tokens/
	var cached []*tokenNode
	for _, g := range guids {
		st := t.stateLocked(g)
		st.meta = nil
		st.docs++
		if st.dir != nil {
			dirs = append(dirs, st.dir)
		}
		if st.tokens != nil {
			tokens = append(tokens, st.tokens)
		}
		for name, v := range st.variants {
			variants = append(variants, v)
			if st.tokens != nil {
				variantNames = append(variantNames, entry{st.tokens, name})
			}
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
			for _, name := range tokenFiles {
				d.NotifyEntry(name)
			}
			d.NotifyEntry("meta.json")
		}
		for _, d := range variants {
			for _, name := range variantFiles {
				d.NotifyEntry(name)
			}
		}
		for _, d := range tokens {
			d.NotifyContent(0, 0) // the listing: a reload may change the variants
		}
		for _, e := range variantNames {
			e.dir.NotifyEntry(e.name)
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
