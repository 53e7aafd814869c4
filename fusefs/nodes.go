package fusefs

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
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

// dirTimeout is how long the kernel may cache attributes of directories
// and symlinks: they change only on a config reload. File attributes are
// never cached (their size changes with the token).
const dirTimeout = time.Second

// Options configure a filesystem.
type Options struct {
	// Source serves the integrations and tokens. Required.
	Source Source
	// UID and GID own every node; only UID may use the mount.
	UID, GID uint32
	// Timeout bounds every broker call made by a FUSE operation. It should
	// exceed the broker's request timeout by a little, so the broker's own
	// (more precise) error wins.
	Timeout time.Duration
	// Logger receives one line per failed operation; nil discards.
	Logger *slog.Logger
}

// tree is shared by every node of one mount. It is read-only after
// construction.
type tree struct {
	Options
	mounted time.Time
	inos    inodes
}

// call runs f with the per-operation deadline, after checking the caller.
func (t *tree) call(ctx context.Context, op, id string, f func(ctx context.Context) error) syscall.Errno {
	if c, ok := fuse.FromContext(ctx); ok && c.Uid != t.UID {
		t.Logger.Debug("refused a caller who does not own the mount", "op", op, "uid", c.Uid)
		return syscall.EACCES
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	err := f(ctx)
	if err == nil {
		return 0
	}
	e := errno(err)
	lvl := slog.LevelDebug
	if e == syscall.EIO {
		lvl = slog.LevelWarn
	}
	t.Logger.Log(ctx, lvl, "operation failed", "op", op, "id", id, "errno", e.Error(), "err", err)
	return e
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

// integrations lists the integrations for a readdir of dir.
func (t *tree) integrations(ctx context.Context, dir string) ([]credential.Integration, syscall.Errno) {
	var list []credential.Integration
	e := t.call(ctx, "readdir", dir, func(ctx context.Context) (err error) {
		list, err = t.Source.Integrations(ctx)
		return err
	})
	return list, e
}

// dirAttr fills the attributes of a directory, which the kernel may cache
// for dirTimeout.
func (t *tree) dirAttr(out *fuse.AttrOut) syscall.Errno {
	t.attr(&out.Attr, dirMode, 0, time.Time{})
	out.SetTimeout(dirTimeout)
	return 0
}

// Inode numbers come from a registry of the guids the mount has seen:
// each guid gets a small id once and keeps it while the mount lives, and
// every node of that integration derives its number from the id. Unlike a
// hash of the name, two integrations can never share a number.
const (
	inoByName = 2
	inoIndex  = 3
	inoBase   = 16 // ids start here, 8 numbers each
)

// Node kinds within an integration's block of inode numbers.
const (
	kindDir = iota
	kindToken
	kindExpiry
	kindMeta
	kindLink
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

// NewRoot returns the root node of a filesystem serving opts.Source.
func NewRoot(opts Options) fs.InodeEmbedder {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 12 * time.Second
	}
	return &rootDir{t: &tree{Options: opts, mounted: time.Now(), inos: inodes{ids: map[string]uint64{}}}}
}

// rootDir is the mount's root: by-name/, integrations.json and one
// directory per integration, which come and go with the configuration.
type rootDir struct {
	fs.Inode
	t *tree
}

var (
	_ = (fs.NodeOnAdder)((*rootDir)(nil))   // adds the static children
	_ = (fs.NodeLookuper)((*rootDir)(nil))  // guid directories are dynamic
	_ = (fs.NodeReaddirer)((*rootDir)(nil)) // lists them
	_ = (fs.NodeGetattrer)((*rootDir)(nil)) // owner-only mode
)

func (r *rootDir) OnAdd(ctx context.Context) {
	r.AddChild("by-name", r.NewPersistentInode(ctx, &byNameDir{t: r.t},
		fs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoByName}), false)
	r.AddChild("integrations.json", r.NewPersistentInode(ctx, indexFile(r.t),
		fs.StableAttr{Mode: syscall.S_IFREG, Ino: inoIndex}), false)
}

func (r *rootDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return r.t.dirAttr(out)
}

func (r *rootDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if ch := r.GetChild(name); ch != nil {
		return ch, getattr(ctx, ch, out)
	}
	// Only the canonical lowercase form names a directory, so that one
	// integration has exactly one path.
	if u, err := uuid.Parse(name); err != nil || u.String() != name {
		return nil, syscall.ENOENT
	}
	if e := r.t.call(ctx, "lookup", name, func(ctx context.Context) error {
		_, err := r.t.Source.Integration(ctx, name)
		return err
	}); e != 0 {
		return nil, e
	}
	ch := r.NewInode(ctx, &integrationDir{t: r.t, guid: name}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: r.t.ino(name, kindDir)})
	return ch, getattr(ctx, ch, out)
}

func (r *rootDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	list, e := r.t.integrations(ctx, "/")
	if e != 0 {
		return nil, e
	}
	entries := []fuse.DirEntry{
		{Name: "by-name", Mode: syscall.S_IFDIR, Ino: inoByName},
		{Name: "integrations.json", Mode: syscall.S_IFREG, Ino: inoIndex},
	}
	for _, in := range list {
		entries = append(entries, fuse.DirEntry{Name: in.GUID, Mode: syscall.S_IFDIR, Ino: r.t.ino(in.GUID, kindDir)})
	}
	return fs.NewListDirStream(entries), 0
}

// getattr fills out with ch's attributes and timeouts, for a Lookup.
func getattr(ctx context.Context, ch *fs.Inode, out *fuse.EntryOut) syscall.Errno {
	var a fuse.AttrOut
	if e := ch.Operations().(fs.NodeGetattrer).Getattr(ctx, nil, &a); e != 0 {
		return e
	}
	out.Attr = a.Attr
	out.SetAttrTimeout(a.Timeout())
	return 0
}

// byNameDir holds one symlink per integration, named as configured.
type byNameDir struct {
	fs.Inode
	t *tree
}

var (
	_ = (fs.NodeLookuper)((*byNameDir)(nil))  // names come from the broker
	_ = (fs.NodeReaddirer)((*byNameDir)(nil)) // and so does the listing
	_ = (fs.NodeGetattrer)((*byNameDir)(nil)) // owner-only mode
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
	// The link's number comes from its target's guid, so a name that
	// moves to another integration gets another inode (the kernel caches
	// a link's target per inode).
	ch := d.NewInode(ctx, &symlink{t: d.t, target: "../" + in.GUID}, fs.StableAttr{Mode: syscall.S_IFLNK, Ino: d.t.ino(in.GUID, kindLink)})
	return ch, getattr(ctx, ch, out)
}

func (d *byNameDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	list, e := d.t.integrations(ctx, "by-name")
	if e != 0 {
		return nil, e
	}
	entries := make([]fuse.DirEntry, 0, len(list))
	for _, in := range list {
		entries = append(entries, fuse.DirEntry{Name: in.Name, Mode: syscall.S_IFLNK, Ino: d.t.ino(in.GUID, kindLink)})
	}
	return fs.NewListDirStream(entries), 0
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
	out.SetTimeout(dirTimeout)
	return 0
}

// integrationDir is <guid>/, holding access_token, expiry and meta.json.
type integrationDir struct {
	fs.Inode
	t    *tree
	guid string
}

var (
	_ = (fs.NodeOnAdder)((*integrationDir)(nil))   // adds the three files
	_ = (fs.NodeLookuper)((*integrationDir)(nil))  // vanishes on removal
	_ = (fs.NodeGetattrer)((*integrationDir)(nil)) // owner-only mode
)

func (d *integrationDir) OnAdd(ctx context.Context) {
	add := func(name string, kind int, n fs.InodeEmbedder) {
		d.AddChild(name, d.NewPersistentInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: d.t.ino(d.guid, kind)}), false)
	}
	src := tokenSource{t: d.t, guid: d.guid}
	add("access_token", kindToken, &tokenFile{tokenSource: src})
	add("expiry", kindExpiry, &expiryFile{tokenSource: src})
	add("meta.json", kindMeta, metaFile(d.t, d.guid))
}

func (d *integrationDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.t.dirAttr(out)
}

func (d *integrationDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch := d.GetChild(name)
	if ch == nil {
		return nil, syscall.ENOENT
	}
	return ch, getattr(ctx, ch, out)
}

// tokenSource is what access_token and expiry share: both ask the broker
// for the current token (refresh-on-read) on stat and on open.
type tokenSource struct {
	t    *tree
	guid string
}

func (s tokenSource) token(ctx context.Context, op string) (*credential.Token, syscall.Errno) {
	var tok *credential.Token
	e := s.t.call(ctx, op, s.guid+"/access_token", func(ctx context.Context) (err error) {
		tok, err = s.t.Source.Token(ctx, s.guid)
		return err
	})
	return tok, e
}

// open is the open of a token-backed file: read-only, refresh-on-read.
func (s tokenSource) open(ctx context.Context, flags uint32) (*credential.Token, syscall.Errno) {
	if e := readOnly(flags); e != 0 {
		return nil, e
	}
	return s.token(ctx, "open")
}

// readOnly refuses opens for writing. The "ro" mount option makes the
// kernel refuse them first; this is the filesystem's own word on it.
func readOnly(flags uint32) syscall.Errno {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return syscall.EROFS
	}
	return 0
}

// stat fills the attributes of a token-backed file whose content for tok
// is size(tok) bytes long. Open handles are ignored on purpose: go-fuse
// passes some open handle even for a path stat, and stat must describe
// what a new open would read. A stat that cannot get a token reports an
// empty file and succeeds, so `ls -l` works while signed out; the open
// then fails with the errno.
func (s tokenSource) stat(ctx context.Context, out *fuse.AttrOut, size func(*credential.Token) int) syscall.Errno {
	tok, e := s.token(ctx, "getattr")
	switch e {
	case 0:
		s.t.attr(&out.Attr, fileMode, size(tok), tok.Obtained())
	case syscall.EINTR, syscall.EACCES:
		return e
	default:
		s.t.attr(&out.Attr, fileMode, 0, time.Time{})
	}
	return 0
}

// tokenFile is <guid>/access_token. Opening it asks the broker for a valid
// token and snapshots it in the handle.
type tokenFile struct {
	fs.Inode
	tokenSource
}

var (
	_ = (fs.NodeOpener)((*tokenFile)(nil))    // refresh-on-read snapshot
	_ = (fs.NodeGetattrer)((*tokenFile)(nil)) // exact current size
)

func (f *tokenFile) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return f.stat(ctx, out, (*credential.Token).Len)
}

func (f *tokenFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	tok, e := f.open(ctx, flags)
	if e != 0 {
		return nil, 0, e
	}
	return &tokenHandle{tok: tok}, fuse.FOPEN_DIRECT_IO, 0
}

// tokenHandle is one open of access_token: a snapshot of the token, so all
// reads of one open file description see the same bytes. It holds only
// the token's enclave, no locked memory between reads.
type tokenHandle struct{ tok *credential.Token }

var _ = (fs.FileReader)((*tokenHandle)(nil)) // serves the snapshot

func (h *tokenHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(h.tok.Len()) {
		return fuse.ReadResultData(nil), 0
	}
	b, release, err := h.tok.View()
	if err != nil {
		return nil, syscall.EIO
	}
	end := min(int64(len(b)), off+int64(len(dest)))
	return &lockedResult{data: b[off:end], release: release}, 0
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

// expiryFile is <guid>/expiry: the token's expiry as RFC 3339, or empty.
// Like access_token it refreshes on open.
type expiryFile struct {
	fs.Inode
	tokenSource
}

var (
	_ = (fs.NodeOpener)((*expiryFile)(nil))    // refresh-on-read snapshot
	_ = (fs.NodeGetattrer)((*expiryFile)(nil)) // exact current size
)

func expiryText(t *credential.Token) string { return credential.FormatTime(t.Expiry()) }

func (f *expiryFile) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return f.stat(ctx, out, func(t *credential.Token) int { return len(expiryText(t)) })
}

func (f *expiryFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	tok, e := f.open(ctx, flags)
	if e != 0 {
		return nil, 0, e
	}
	return bytesHandle(expiryText(tok)), fuse.FOPEN_DIRECT_IO, 0
}

// bytesHandle is one open of a file whose content is not secret: a
// snapshot of the bytes.
type bytesHandle []byte

var _ = (fs.FileReader)((bytesHandle)(nil)) // serves the snapshot

func (h bytesHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(h)) {
		return fuse.ReadResultData(nil), 0
	}
	end := off + int64(len(dest))
	if end > int64(len(h)) {
		end = int64(len(h))
	}
	return fuse.ReadResultData(h[off:end]), 0
}

// jsonFile is a JSON document about the integrations: <guid>/meta.json or
// integrations.json. It never causes a refresh or a network call. Each
// open snapshots the document.
type jsonFile struct {
	fs.Inode
	t    *tree
	name string                                 // for logs
	doc  func(ctx context.Context) (any, error) // what the file shows now
}

var (
	_ = (fs.NodeOpener)((*jsonFile)(nil))    // snapshot of the JSON
	_ = (fs.NodeGetattrer)((*jsonFile)(nil)) // its exact size
)

// metaFile returns the node of <guid>/meta.json.
func metaFile(t *tree, guid string) *jsonFile {
	return &jsonFile{t: t, name: guid + "/meta.json", doc: func(ctx context.Context) (any, error) {
		return t.Source.Integration(ctx, guid)
	}}
}

// indexFile returns the node of integrations.json.
func indexFile(t *tree) *jsonFile {
	return &jsonFile{t: t, name: "integrations.json", doc: func(ctx context.Context) (any, error) {
		list, err := t.Source.Integrations(ctx)
		if list == nil {
			list = []credential.Integration{}
		}
		return list, err
	}}
}

func (f *jsonFile) content(ctx context.Context, op string) ([]byte, syscall.Errno) {
	var b []byte
	e := f.t.call(ctx, op, f.name, func(ctx context.Context) error {
		v, err := f.doc(ctx)
		if err != nil {
			return err
		}
		b, err = marshal(v)
		return err
	})
	return b, e
}

func (f *jsonFile) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	b, e := f.content(ctx, "getattr")
	if e != 0 {
		return e
	}
	f.t.attr(&out.Attr, fileMode, len(b), time.Time{})
	return 0
}

func (f *jsonFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if e := readOnly(flags); e != 0 {
		return nil, 0, e
	}
	b, e := f.content(ctx, "open")
	if e != 0 {
		return nil, 0, e
	}
	return bytesHandle(b), fuse.FOPEN_DIRECT_IO, 0
}

// marshal is JSON with two-space indentation and a final newline.
func marshal(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
