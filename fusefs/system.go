package fusefs

// The system mount: one mount, served by the root broker, in which every
// process reads its own user's credentials at the same paths.
//
//	/oauth/
//	├── <guid> -> .users/<caller's uid>/<guid>      (computed per caller)
//	├── by-name -> .users/<caller's uid>/by-name
//	├── integrations.json -> .users/<caller's uid>/integrations.json
//	└── .users/                                      (0111: no listing)
//	    └── <uid>/                                   (0500, owned by uid)
//	        └── the tree of a single user's mount
//
// The kernel shares its caches of names, attributes and pages between
// every process that uses a mount, so nothing one user's process could
// see may be cached under a name another user's process resolves. The
// top-level names are the same for everyone (the integrations are the
// host's), and they are symlinks whose target the filesystem computes for
// each caller at each readlink: the kernel keeps neither their target
// (symlink caching is off) nor their attributes (their size depends on
// the caller). Everything below .users/<uid> belongs to that one user, so
// it is cached exactly as in a user's own mount; the mount checks modes
// in the kernel (default_permissions), so other users cannot enter it,
// and the filesystem refuses their lookups too.

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oauthfs/oauthfs/credential"
)

// SystemOptions configure a system mount.
type SystemOptions struct {
	// View returns the source of user uid's view and the group that owns
	// it. It is called when a user first comes, and again after the
	// user's view was dropped for being idle. Required.
	View func(uid uint32) (Source, uint32, error)
	// Watch reports changes of the integrations themselves (a change
	// without a GUID: a reload) until ctx ends; nil: the kernel keeps no
	// top-level name.
	Watch func(ctx context.Context, f func(credential.Change))
	// Timeout bounds every call to a view's source (see Options).
	Timeout time.Duration
	// Logger receives one line per failed operation; nil discards.
	Logger *slog.Logger
	// Context is the mount's lifetime. Nil means context.Background().
	Context context.Context
	// Idle is how long a view no process used is kept (10 minutes if
	// zero): views are built on demand and dropped when idle, so that
	// callers coming and going do not grow memory without bound.
	Idle time.Duration
	// PerUser bounds the calls to the broker one user's operations have
	// under way at once (32 if zero): a storm of one user's lookups waits
	// on its own slots, not on other users'.
	PerUser int
}

// usersDirName is the directory that holds each user's view.
const usersDirName = ".users"

// Inode numbers of the system mount's own nodes; each view gets a block
// of numbers of its own above viewBlock (see view).
const (
	inoUsers  = 2
	viewBlock = 1 << 44
)

// system is what every node of a system mount shares. It is safe for
// concurrent use.
type system struct {
	SystemOptions
	mounted time.Time
	inos    inodes // of the top-level links

	mu     sync.Mutex // guards the fields below
	root   *fs.Inode
	users  *fs.Inode
	views  map[uint32]*view
	serial uint64          // counts the views made, for their blocks of inode numbers
	names  map[string]bool // top-level names the kernel may keep
	live   bool            // Watch runs: a reload reaches the kernel
}

// view is one user's tree in a system mount.
type view struct {
	root   *rootDir
	inode  *fs.Inode
	cancel context.CancelFunc
}

// NewSystemRoot returns the root node of a system mount.
func NewSystemRoot(opts SystemOptions) fs.InodeEmbedder {
	defaults(&opts.Logger, &opts.Timeout, &opts.Context)
	if opts.Idle == 0 {
		opts.Idle = 10 * time.Minute
	}
	if opts.PerUser == 0 {
		opts.PerUser = 32
	}
	s := &system{SystemOptions: opts, mounted: time.Now(), inos: inodes{ids: map[string]uint64{}},
		views: map[uint32]*view{}, names: map[string]bool{}}
	return &systemRoot{s: s}
}

// keep is how long the kernel may keep the top-level names and
// directories: until a reload, once reloads reach the kernel.
func (s *system) keep() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.live {
		return 0
	}
	return dirKeep
}

// attr fills the attributes of a node of the system mount itself, owned
// by root.
func (s *system) attr(out *fuse.Attr, mode uint32, size int) {
	out.Mode = mode
	out.Size = uint64(size)
	out.SetTimes(nil, &s.mounted, &s.mounted)
	out.Nlink = 1
}

// caller returns the uid of the process a FUSE operation comes from.
func caller(ctx context.Context) (uint32, bool) {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return 0, false
	}
	return c.Uid, true
}

// viewOf returns user uid's view, making it on first use. View is asked
// without holding s.mu: it may look the user up in a directory service.
func (s *system) viewOf(ctx context.Context, uid uint32) (*view, syscall.Errno) {
	s.mu.Lock()
	v := s.views[uid]
	s.mu.Unlock()
	if v != nil {
		return v, 0
	}
	src, gid, err := s.View(uid)
	if err != nil {
		e := credential.Errno(err)
		s.Logger.Warn("no view for a user", "uid", uid, "errno", e.Error(), "err", err)
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.views[uid]; v != nil {
		return v, 0 // made meanwhile
	}
	s.serial++
	vctx, cancel := context.WithCancel(s.Context)
	t := newTree(Options{Source: src, UID: uid, GID: gid, Timeout: s.Timeout, Logger: s.Logger.With("uid", uid), Context: vctx})
	t.inoOffset = s.serial * viewBlock
	// The times of a view's directories are the mount's, not when the
	// user came: another user who stats the view's root (the kernel may
	// answer from its cache without asking) learns nothing of when.
	t.mounted = s.mounted
	t.slots = make(chan struct{}, s.PerUser)
	t.used.Store(time.Now().UnixNano())
	r := &rootDir{t: t}
	name := strconv.FormatUint(uint64(uid), 10)
	ch := s.users.NewPersistentInode(ctx, r, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: t.inoOffset + 1})
	s.users.AddChild(name, ch, true)
	v = &view{root: r, inode: ch, cancel: cancel}
	s.views[uid] = v
	go r.watch()
	s.Logger.Debug("view made", "uid", uid)
	return v, 0
}

// Views returns how many users' views the mount holds now.
func (r *systemRoot) Views() int {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return len(r.s.views)
}

// dropIdle drops the views no process used for Idle: the kernel forgets
// what it kept of them, and their watch of the broker ends.
func (s *system) dropIdle() {
	cutoff := time.Now().Add(-s.Idle).UnixNano()
	var idle []string
	var gone []*view
	s.mu.Lock()
	for uid, v := range s.views {
		if v.root.t.used.Load() < cutoff {
			name := strconv.FormatUint(uint64(uid), 10)
			s.users.RmChild(name)
			delete(s.views, uid)
			idle, gone = append(idle, name), append(gone, v)
		}
	}
	users := s.users
	s.mu.Unlock()
	for i, v := range gone {
		// Whatever the kernel still keeps of the view is dropped, and a
		// file still open on it asks the broker at every read from now on.
		v.root.t.changed(credential.Change{Revoke: true, Unwatched: true})
		v.cancel()
		users.NotifyEntry(idle[i])
		s.Logger.Debug("idle view dropped", "uid", idle[i])
	}
}

// run drops idle views and follows reloads until the mount's context
// ends. It starts once the server is up: the kernel cannot be told of a
// change before.
func (s *system) run() {
	if s.Watch != nil {
		go s.Watch(s.Context, func(c credential.Change) {
			if c.GUID == "" {
				s.reload()
			}
		})
	}
	tick := time.NewTicker(min(s.Idle/2, time.Minute))
	defer tick.Stop()
	for {
		select {
		case <-s.Context.Done():
			return
		case <-tick.C:
			s.dropIdle()
		}
	}
}

// reload drops the top-level names and listing the kernel keeps, and
// starts keeping them (the first change says that Watch runs).
func (s *system) reload() {
	s.mu.Lock()
	s.live = true
	names := s.names
	s.names = map[string]bool{}
	root := s.root
	s.mu.Unlock()
	if root == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		root.NotifyContent(0, 0)
		for n := range names {
			root.NotifyEntry(n)
		}
	}()
	select {
	case <-done:
	case <-time.After(notifyWait):
	}
}

// systemRoot is the system mount's root: one link per top-level name of
// a user's tree, and .users.
type systemRoot struct {
	fs.Inode
	s *system
}

var (
	_ = (fs.NodeOnAdder)((*systemRoot)(nil))        // adds .users
	_ = (fs.NodeLookuper)((*systemRoot)(nil))       // the links
	_ = (fs.NodeOpendirHandler)((*systemRoot)(nil)) // the same listing for everyone
	_ = (fs.NodeGetattrer)((*systemRoot)(nil))      // 0555, root's
)

func (r *systemRoot) OnAdd(ctx context.Context) {
	s := r.s
	users := r.NewPersistentInode(ctx, &usersDir{s: s}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoUsers})
	r.AddChild(usersDirName, users, false)
	s.mu.Lock()
	s.root, s.users = r.EmbeddedInode(), users
	s.mu.Unlock()
}

func (r *systemRoot) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.s.attr(&out.Attr, syscall.S_IFDIR|0o555, 0)
	out.SetTimeout(r.s.keep())
	return 0
}

// Lookup answers a top-level name with its link. A guid must name an
// integration (asked of the caller's view: integrations are the same for
// every user).
func (r *systemRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	s := r.s
	switch name {
	case usersDirName:
		ch := r.GetChild(name)
		var a fuse.AttrOut
		ch.Operations().(*usersDir).Getattr(ctx, nil, &a)
		out.Attr = a.Attr
		out.SetAttrTimeout(dirKeep)
		out.SetEntryTimeout(dirKeep)
		return ch, 0
	case "by-name", "integrations.json":
	default:
		if u, err := uuid.Parse(name); err != nil || u.String() != name {
			return nil, syscall.ENOENT
		}
		uid, _ := caller(ctx)
		v, e := s.viewOf(ctx, uid)
		if e != 0 {
			return nil, e
		}
		if e := v.root.t.call(ctx, "lookup", name, func(ctx context.Context) error {
			_, err := v.root.t.Source.Integration(ctx, name)
			return err
		}); e != 0 {
			return nil, e
		}
	}
	l := &userLink{s: s, name: name}
	ch := r.NewInode(ctx, l, fs.StableAttr{Mode: syscall.S_IFLNK, Ino: s.ino(name)})
	var a fuse.AttrOut
	l.Getattr(ctx, nil, &a)
	out.Attr = a.Attr
	out.SetAttrTimeout(0)
	keep := s.keep()
	if keep > 0 {
		s.mu.Lock()
		s.names[name] = true
		s.mu.Unlock()
	}
	out.SetEntryTimeout(keep)
	return ch, 0
}

// ino returns the inode number of the top-level link name.
func (s *system) ino(name string) uint64 { return inoBase + s.inos.id(name) }

func (r *systemRoot) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	s := r.s
	uid, _ := caller(ctx)
	v, e := s.viewOf(ctx, uid)
	if e != 0 {
		return nil, 0, e
	}
	var list []credential.Integration
	if e := v.root.t.call(ctx, "opendir", "/", func(ctx context.Context) (err error) {
		list, err = v.root.t.Source.Integrations(ctx)
		return err
	}); e != 0 {
		return nil, 0, e
	}
	entries := []fuse.DirEntry{
		{Name: usersDirName, Mode: syscall.S_IFDIR, Ino: inoUsers},
		{Name: "by-name", Mode: syscall.S_IFLNK, Ino: s.ino("by-name")},
		{Name: "integrations.json", Mode: syscall.S_IFLNK, Ino: s.ino("integrations.json")},
	}
	for _, in := range list {
		entries = append(entries, fuse.DirEntry{Name: in.GUID, Mode: syscall.S_IFLNK, Ino: s.ino(in.GUID)})
	}
	var fl uint32
	if s.keep() > 0 {
		fl = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	return &dirHandle{entries: entries}, fl, 0
}

// userLink is a top-level name: a link into the caller's own view.
type userLink struct {
	fs.Inode
	s    *system
	name string
}

var (
	_ = (fs.NodeReadlinker)((*userLink)(nil)) // the caller's target
	_ = (fs.NodeGetattrer)((*userLink)(nil))  // its length for the caller, never kept
)

// target is the link's target for the process of ctx.
func (l *userLink) target(ctx context.Context) string {
	uid, _ := caller(ctx)
	return usersDirName + "/" + strconv.FormatUint(uint64(uid), 10) + "/" + l.name
}

func (l *userLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(l.target(ctx)), 0
}

func (l *userLink) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	l.s.attr(&out.Attr, linkMode, len(l.target(ctx)))
	out.SetTimeout(0) // the size is the caller's
	return 0
}

// usersDir is .users: one directory per user who came, which only that
// user may enter. Nobody but root may list it (0111), and root sees it
// empty.
type usersDir struct {
	fs.Inode
	s *system
}

var (
	_ = (fs.NodeLookuper)((*usersDir)(nil))       // the caller's own view only
	_ = (fs.NodeOpendirHandler)((*usersDir)(nil)) // empty
	_ = (fs.NodeGetattrer)((*usersDir)(nil))      // 0111, root's
)

func (d *usersDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.s.attr(&out.Attr, syscall.S_IFDIR|0o111, 0)
	out.SetTimeout(dirKeep)
	return 0
}

// Lookup answers the caller's own uid with their view (made on first
// use), and refuses every other user's with EACCES, root's callers
// included: a view is its user's alone.
func (d *usersDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	want, err := strconv.ParseUint(name, 10, 32)
	if err != nil || strconv.FormatUint(want, 10) != name {
		return nil, syscall.ENOENT
	}
	uid, _ := caller(ctx)
	if uint32(want) != uid {
		d.s.Logger.Debug("refused a lookup of another user's view", "uid", uid, "view", name)
		return nil, syscall.EACCES
	}
	v, e := d.s.viewOf(ctx, uid)
	if e != 0 {
		return nil, e
	}
	v.root.t.entry(ctx, v.inode, out, v.root.t.dirKeep())
	return v.inode, 0
}

func (d *usersDir) OpendirHandle(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{}, 0, 0
}
