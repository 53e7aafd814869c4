package fusefs

// The directories: the root, by-name/ with its links, <guid>/, and
// <guid>/tokens/<variant>/.

import (
	"context"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oauthfs/oauthfs/credential"
)

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
	byName := r.NewPersistentInode(ctx, &byNameDir{t: t}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: t.inoOffset + inoByName})
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
func (r *rootDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return r.t.dirAttr(out)
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
		{Name: "by-name", Mode: syscall.S_IFDIR, Ino: t.inoOffset + inoByName},
		{Name: "integrations.json", Mode: syscall.S_IFREG},
	}
	for _, in := range list {
		entries = append(entries, fuse.DirEntry{Name: in.GUID, Mode: syscall.S_IFDIR, Ino: t.ino(in.GUID, kindDir)})
	}
	return &dirHandle{entries: entries}, t.dirFlags(), 0
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

// integrationDir is <guid>/, holding the main token's files, meta.json
// and tokens/.
type integrationDir struct {
	fs.Inode
	t    *tree
	guid string
}

var (
	_ = (fs.NodeLookuper)((*integrationDir)(nil))       // each file's current version
	_ = (fs.NodeOpendirHandler)((*integrationDir)(nil)) // the names
	_ = (fs.NodeGetattrer)((*integrationDir)(nil))      // owner-only mode
)

func (d *integrationDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.t.dirAttr(out)
}

func (d *integrationDir) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	entries := []fuse.DirEntry{{Name: "meta.json", Mode: syscall.S_IFREG}, {Name: "tokens", Mode: syscall.S_IFDIR, Ino: d.t.ino(d.guid+"/tokens", kindDir)}}
	for _, name := range tokenFiles {
		entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG})
	}
	return &dirHandle{entries: entries}, d.t.dirFlags(), 0
}

// Lookup returns the current version of a file, or tokens/.
func (d *integrationDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t := d.t
	if e := t.caller(ctx, "lookup"); e != 0 {
		return nil, e
	}
	switch name {
	case "meta.json":
		return t.metaFile(ctx, d, out)
	case "tokens":
		ch := d.GetChild(name)
		if ch == nil {
			ch = d.NewInode(ctx, &tokensDir{t: t, guid: d.guid}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: t.ino(d.guid+"/tokens", kindDir)})
			t.mu.Lock()
			t.stateLocked(d.guid).tokens = ch
			t.mu.Unlock()
		}
		t.entry(ctx, ch, out, t.dirKeep())
		return ch, 0
	}
	return t.tokenFile(ctx, d.EmbeddedInode(), d.guid, "", name, out)
}

// tokenFile returns the current version of file name of guid's token
// variant (the main token for ""), in directory dir. A version holds the
// token the source hands out now, refreshed first when needed
// (refresh-on-read happens here, so errors surface at open), and the
// kernel may keep it until the token's refresh time. A version's size is
// exact from the start: a size that were only a bound would let the
// kernel pad a read with zeros when the file's attributes change while
// the read is under way.
func (t *tree) tokenFile(ctx context.Context, dir *fs.Inode, guid, variant, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	kind := slices.Index(tokenFiles[:], name)
	if kind < 0 || variant != "" && kind == fileIDToken {
		return nil, syscall.ENOENT
	}
	key := tokenDir(guid, variant)
	// The generation is taken before the token, so that a change in
	// between retires the version at once.
	t.mu.Lock()
	n := &tokenNode{t: t, guid: guid, variant: variant, parent: dir, kind: kind, gen: t.stateLocked(guid).gen}
	t.mu.Unlock()
	tok, until := t.Source.Peek(guid, variant)
	if tok == nil || time.Until(until) <= cacheSlack {
		if e := t.call(ctx, "lookup", key+"/"+name, func(ctx context.Context) (err error) {
			tok, until, err = t.Source.Token(ctx, guid, variant)
			return err
		}); e != 0 {
			return t.unavailable(ctx, dir, key, name, kind, e, out)
		}
		n.touched = true // the source handed it out for this read
	}
	data, e := dataOf(tok, kind)
	if e != 0 {
		return t.unavailable(ctx, dir, key, name, kind, e, out)
	}
	n.tok, n.data, n.until = tok, data, retireAt(t.keepUntil(until))
	ch := dir.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: t.version()})
	t.track(n)
	t.entry(ctx, ch, out, lookupKeep(tok, n.until))
	return ch, 0
}

// tokenDir names the directory of guid's token variant ("" for the main
// token), for the inode numbers of its nodes and for logs.
func tokenDir(guid, variant string) string {
	if variant == "" {
		return guid
	}
	return guid + "/tokens/" + variant
}

// tokensDir is <guid>/tokens/: one directory per token variant the
// configuration names.
type tokensDir struct {
	fs.Inode
	t    *tree
	guid string
}

var (
	_ = (fs.NodeLookuper)((*tokensDir)(nil))       // the integration's variants
	_ = (fs.NodeOpendirHandler)((*tokensDir)(nil)) // the listing, cached by the kernel
	_ = (fs.NodeGetattrer)((*tokensDir)(nil))      // owner-only mode
)

func (d *tokensDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.t.dirAttr(out)
}

// variants returns the names of the integration's token variants.
func (d *tokensDir) variants(ctx context.Context, op string) ([]string, syscall.Errno) {
	var in credential.Integration
	e := d.t.call(ctx, op, d.guid+"/tokens", func(ctx context.Context) (err error) {
		in, err = d.t.Source.Integration(ctx, d.guid)
		return err
	})
	names := make([]string, len(in.Tokens))
	for i, v := range in.Tokens {
		names[i] = v.Name
	}
	return names, e
}

func (d *tokensDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t := d.t
	names, e := d.variants(ctx, "lookup")
	if e != 0 {
		return nil, e
	}
	if !slices.Contains(names, name) {
		return nil, syscall.ENOENT
	}
	ch := d.GetChild(name)
	if ch == nil {
		ch = d.NewInode(ctx, &variantDir{t: t, guid: d.guid, variant: name}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: t.ino(tokenDir(d.guid, name), kindDir)})
		t.mu.Lock()
		t.stateLocked(d.guid).variants[name] = ch
		t.mu.Unlock()
	}
	t.entry(ctx, ch, out, t.dirKeep())
	return ch, 0
}

func (d *tokensDir) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	names, e := d.variants(ctx, "opendir")
	if e != 0 {
		return nil, 0, e
	}
	entries := make([]fuse.DirEntry, 0, len(names))
	for _, name := range names {
		entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: d.t.ino(tokenDir(d.guid, name), kindDir)})
	}
	return &dirHandle{entries: entries}, d.t.dirFlags(), 0
}

// variantDir is <guid>/tokens/<variant>/: the variant's access_token,
// expiry and token.json.
type variantDir struct {
	fs.Inode
	t             *tree
	guid, variant string
}

var (
	_ = (fs.NodeLookuper)((*variantDir)(nil))       // each file's current version
	_ = (fs.NodeOpendirHandler)((*variantDir)(nil)) // the three names
	_ = (fs.NodeGetattrer)((*variantDir)(nil))      // owner-only mode
)

// variantFiles are the files of a token variant: a variant has no ID
// token of its own.
var variantFiles = []string{tokenFiles[fileToken], tokenFiles[fileExpiry], tokenFiles[fileDocument]}

func (d *variantDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.t.dirAttr(out)
}

func (d *variantDir) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	entries := make([]fuse.DirEntry, 0, len(variantFiles))
	for _, name := range variantFiles {
		entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG})
	}
	return &dirHandle{entries: entries}, d.t.dirFlags(), 0
}

func (d *variantDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := d.t.caller(ctx, "lookup"); e != 0 {
		return nil, e
	}
	return d.t.tokenFile(ctx, d.EmbeddedInode(), d.guid, d.variant, name, out)
}
