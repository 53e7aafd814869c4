package fusefs

// The JSON files: <guid>/meta.json and integrations.json.

import (
	"context"
	"encoding/json"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oauthfs/oauthfs/credential"
)

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
	cur, gen := st.meta, st.docs
	t.mu.Unlock()
	if cur == nil {
		var e syscall.Errno
		cur, e = t.newJSON(ctx, d.EmbeddedInode(), d.guid+"/meta.json", func(ctx context.Context) (any, error) {
			return t.Source.Integration(ctx, d.guid)
		}, func(n *jsonNode) bool {
			if st.docs != gen {
				return false
			}
			st.meta = n
			return true
		})
		if e != 0 {
			return nil, e
		}
	}
	return cur.entry(ctx, out)
}

// indexFile returns the current version of integrations.json.
func (t *tree) indexFile(ctx context.Context, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t.mu.Lock()
	cur, root, gen := t.index, t.root, t.docs
	t.mu.Unlock()
	if cur == nil {
		var e syscall.Errno
		cur, e = t.newJSON(ctx, root, "integrations.json", func(ctx context.Context) (any, error) {
			list, err := t.Source.Integrations(ctx)
			if err != nil {
				return nil, err
			}
			if list == nil {
				list = []credential.Integration{}
			}
			t.remember(list)
			return list, nil
		}, func(n *jsonNode) bool {
			if t.docs != gen {
				return false
			}
			t.index = n
			return true
		})
		if e != 0 {
			return nil, e
		}
	}
	return cur.entry(ctx, out)
}

// newJSON makes a new version, under parent, of the JSON document named
// name that build returns. keep, called under t.mu, makes it the version
// to serve from now on, or reports that a change came while it was being
// built: then it is served to this lookup only, and kept nowhere.
func (t *tree) newJSON(ctx context.Context, parent *fs.Inode, name string, build func(context.Context) (any, error), keep func(*jsonNode) bool) (*jsonNode, syscall.Errno) {
	var doc []byte
	if e := t.call(ctx, "lookup", name, func(ctx context.Context) error {
		v, err := build(ctx)
		if err != nil {
			return err
		}
		doc, err = marshal(v)
		return err
	}); e != 0 {
		return nil, e
	}
	n := &jsonNode{t: t, doc: doc}
	parent.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: t.version()})
	t.mu.Lock()
	n.passing = !keep(n)
	t.mu.Unlock()
	return n, 0
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
