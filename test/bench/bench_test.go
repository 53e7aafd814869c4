// Package bench measures open+read+close of an access token through the
// oauthfs mount against two floors measured in the same run: the same
// bytes on tmpfs (/dev/shm), and a minimal go-fuse file serving static
// bytes with direct I/O and the same mount options (the FUSE floor).
// 'make bench' prints the ratios.
package bench

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/internal/fusetest"
	"github.com/oauthfs/oauthfs/session"
)

// token is a typical access token length (GitHub's are 40, Google's
// about 200, JWTs 800 or more).
var token = []byte("ya29.a0AfB_byCx1234567890abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH")

// openReadClose is the measured operation, with raw syscalls so that the
// three cases differ only in the filesystem.
func openReadClose(b *testing.B, path string) {
	buf := make([]byte, 4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fd, err := syscall.Open(path, syscall.O_RDONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		total := 0
		for {
			n, err := syscall.Read(fd, buf[total:])
			if err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				break
			}
			total += n
		}
		syscall.Close(fd)
		if total != len(token) {
			b.Fatalf("read %d bytes; want %d", total, len(token))
		}
	}
}

func BenchmarkOpenReadClose(b *testing.B) {
	b.Run("tmpfs", func(b *testing.B) {
		dir, err := os.MkdirTemp("/dev/shm", "oauthfs-bench")
		if err != nil {
			b.Skip("no /dev/shm")
		}
		defer os.RemoveAll(dir)
		p := filepath.Join(dir, "access_token")
		os.WriteFile(p, token, 0o400)
		openReadClose(b, p)
	})
	b.Run("floor", func(b *testing.B) {
		dir := fusetest.Mount(b, &floorRoot{})
		openReadClose(b, filepath.Join(dir, "access_token"))
	})
	b.Run("oauthfs", func(b *testing.B) {
		br, cfg := benchBroker(b)
		uid := os.Getuid()
		dir := fusetest.Mount(b, fusefs.NewRoot(fusefs.Options{Source: broker.Session{B: br, UID: uid},
			UID: uint32(uid), GID: uint32(os.Getgid()), Timeout: 12 * time.Second}))
		b.Run("guid", func(b *testing.B) {
			openReadClose(b, filepath.Join(dir, cfg.Integrations[0].GUID.String(), "access_token"))
		})
		b.Run("by-name", func(b *testing.B) {
			openReadClose(b, filepath.Join(dir, "by-name", "Bench", "access_token"))
		})
	})
	// client: a session mount of a broker serving its socket in this
	// process (the daemon's set-up, without a second process).
	b.Run("client", func(b *testing.B) {
		br, cfg := benchBroker(b)
		sock := filepath.Join(b.TempDir(), "broker.sock")
		l, err := session.Listen(sock, 0o600, 0o700)
		if err != nil {
			b.Fatal(err)
		}
		srv := &session.Server{B: br, Owner: -1}
		go srv.Serve(l)
		defer srv.Close()
		c := session.NewCached(session.NewClient(sock, 12*time.Second), nil)
		uid := os.Getuid()
		dir := fusetest.Mount(b, fusefs.NewRoot(fusefs.Options{Source: c, UID: uint32(uid), GID: uint32(os.Getgid()), Timeout: 14 * time.Second, Context: b.Context()}))
		for !c.Live() {
			time.Sleep(time.Millisecond)
		}
		b.Run("guid", func(b *testing.B) {
			openReadClose(b, filepath.Join(dir, cfg.Integrations[0].GUID.String(), "access_token"))
		})
	})
}

// benchBroker is a memory-only broker with a cached token for "Bench".
func benchBroker(b *testing.B) (*broker.Broker, *config.Config) {
	cfg, err := config.Parse("bench.toml", []byte(`
[broker]
state_dir = ""
[[integration]]
name = "Bench"
client_id = "id"
client_secret = "secret"
auth_url = "https://example.com/authorize"
token_url = "https://example.com/token"
`))
	if err != nil {
		b.Fatal(err)
	}
	br, err := broker.New(cfg, broker.Options{})
	if err != nil {
		b.Fatal(err)
	}
	tok := append([]byte(nil), token...)
	if err := br.Put(os.Getuid(), "Bench", credential.Tokens{Access: tok, Expiry: time.Now().Add(24 * time.Hour)}); err != nil {
		b.Fatal(err)
	}
	return br, cfg
}

// floorRoot is the least a go-fuse filesystem can do: one static file,
// direct I/O, mounted with the same options as oauthfs.
type floorRoot struct{ fs.Inode }

func (r *floorRoot) OnAdd(ctx context.Context) {
	r.AddChild("access_token", r.NewPersistentInode(ctx, &floorFile{}, fs.StableAttr{Mode: syscall.S_IFREG}), false)
}

type floorFile struct{ fs.Inode }

var (
	_ = (fs.NodeOpener)((*floorFile)(nil))
	_ = (fs.NodeGetattrer)((*floorFile)(nil))
	_ = (fs.NodeReader)((*floorFile)(nil))
)

func (f *floorFile) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o400
	out.Size = uint64(len(token))
	return 0
}

func (f *floorFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *floorFile) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(token)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(token[off:]), 0
}
