// Package bench measures oauthfs against floors measured in the same run,
// for 'make bench', which prints the ratios (ratios.awk):
//
//   - open+read+close of a hot access_token, embedded, through a session
//     mount and through the system mount, against the same bytes on tmpfs
//     (/dev/shm), with a
//     minimal go-fuse file serving static bytes with direct I/O (what FUSE
//     costs when every read reaches the server) as a reference;
//   - cat(1) of access_token as a process, against cat of a tmpfs file;
//   - ls -l of a mount with 1,000 and 10,000 integrations, against the
//     same tree on tmpfs;
//   - a read of integrations.json with 5,000 integrations, against the
//     same bytes on tmpfs;
//   - read latency (p99) of 64 readers across a refresh, against the same
//     readers on a hot token;
//   - refreshes caused by 1,000 readers that all find their token due;
//   - connections opened to the provider by a storm of refreshes.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/client"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/internal/fusetest"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/unixsock"
	"github.com/oauthfs/oauthfs/session"
)

// token is a typical access token length (GitHub's are 40, Google's
// about 200, JWTs 800 or more).
var token = []byte("ya29.a0AfB_byCx1234567890abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH")

// readFile is one open+read+close with raw syscalls, so that the cases
// differ only in the filesystem. It returns the bytes read.
func readFile(path string, buf []byte) (int, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer syscall.Close(fd)
	total := 0
	for {
		n, err := syscall.Read(fd, buf[total:])
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
		total += n
	}
}

// openReadClose is the measured operation of the hot-read benchmarks.
func openReadClose(b *testing.B, path string, want int) {
	buf := make([]byte, 4096)
	readFile(path, buf) // the first read fills the kernel's cache
	b.ResetTimer()
	for b.Loop() {
		n, err := readFile(path, buf)
		if err != nil || n != want {
			b.Fatalf("read %d bytes, %v; want %d", n, err, want)
		}
	}
}

// tmpfsFile writes token to a new file on tmpfs and returns its path.
func tmpfsFile(b *testing.B) string {
	dir, err := os.MkdirTemp("/dev/shm", "oauthfs-bench")
	if err != nil {
		b.Skip("no /dev/shm")
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "access_token")
	os.WriteFile(p, token, 0o400)
	return p
}

func BenchmarkOpenReadClose(b *testing.B) {
	b.Run("tmpfs", func(b *testing.B) {
		openReadClose(b, tmpfsFile(b), len(token))
	})
	b.Run("floor", func(b *testing.B) {
		dir := fusetest.Mount(b, &floorRoot{})
		openReadClose(b, filepath.Join(dir, "access_token"), len(token))
	})
	b.Run("oauthfs", func(b *testing.B) {
		br, cfg := benchBroker(b, 1)
		dir := mountEmbedded(b, br)
		b.Run("guid", func(b *testing.B) {
			openReadClose(b, filepath.Join(dir, cfg.Integrations[0].GUID.String(), "access_token"), len(token))
		})
		b.Run("by-name", func(b *testing.B) {
			openReadClose(b, filepath.Join(dir, "by-name", "Bench0", "access_token"), len(token))
		})
	})
	// system: the system mount, as 'oauthfs broker' serves it, read by
	// root through root's own view.
	b.Run("system", func(b *testing.B) {
		br, cfg := benchBroker(b, 1)
		dir := mountSystem(b, br)
		b.Run("guid", func(b *testing.B) {
			openReadClose(b, filepath.Join(dir, cfg.Integrations[0].GUID.String(), "access_token"), len(token))
		})
		b.Run("by-name", func(b *testing.B) {
			openReadClose(b, filepath.Join(dir, "by-name", "Bench0", "access_token"), len(token))
		})
	})
	// client: a session mount of a broker serving its socket in this
	// process (the daemon's set-up, without a second process).
	b.Run("client", func(b *testing.B) {
		br, cfg := benchBroker(b, 1)
		dir := mountClient(b, br)
		b.Run("guid", func(b *testing.B) {
			openReadClose(b, filepath.Join(dir, cfg.Integrations[0].GUID.String(), "access_token"), len(token))
		})
	})
}

// BenchmarkCat runs cat(1) on access_token as a process.
func BenchmarkCat(b *testing.B) {
	cat := func(b *testing.B, path string) {
		exec.Command("cat", path).Run()
		b.ResetTimer()
		for b.Loop() {
			out, err := exec.Command("cat", path).Output()
			if err != nil || len(out) != len(token) {
				b.Fatalf("cat = %d bytes, %v", len(out), err)
			}
		}
	}
	b.Run("tmpfs", func(b *testing.B) { cat(b, tmpfsFile(b)) })
	b.Run("oauthfs", func(b *testing.B) {
		br, cfg := benchBroker(b, 1)
		dir := mountEmbedded(b, br)
		cat(b, filepath.Join(dir, cfg.Integrations[0].GUID.String(), "access_token"))
	})
}

// BenchmarkLsL runs ls -l on the root of a mount with n integrations, and
// on the same tree on tmpfs: n directories, by-name/ and
// integrations.json.
func BenchmarkLsL(b *testing.B) {
	ls := func(b *testing.B, dir string, n int) {
		want := n + 3 // "total" and the two other entries
		exec.Command("ls", "-l", dir).Run()
		b.ResetTimer()
		for b.Loop() {
			out, err := exec.Command("ls", "-l", dir).Output()
			if lines := strings.Count(string(out), "\n"); err != nil || lines != want {
				b.Fatalf("ls -l = %d lines, %v; want %d", lines, err, want)
			}
		}
	}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			br, cfg := benchBroker(b, n)
			b.Run("tmpfs", func(b *testing.B) {
				dir, err := os.MkdirTemp("/dev/shm", "oauthfs-bench")
				if err != nil {
					b.Skip("no /dev/shm")
				}
				defer os.RemoveAll(dir)
				for _, in := range cfg.Integrations {
					os.Mkdir(filepath.Join(dir, in.GUID.String()), 0o500)
				}
				os.Mkdir(filepath.Join(dir, "by-name"), 0o500)
				os.WriteFile(filepath.Join(dir, "integrations.json"), []byte("[]\n"), 0o400)
				ls(b, dir, n)
			})
			b.Run("oauthfs", func(b *testing.B) {
				ls(b, mountEmbedded(b, br), n)
			})
		})
	}
}

// BenchmarkIndex reads integrations.json of a mount with 5,000
// integrations (built once per change, then kept by the kernel), and the
// same bytes on tmpfs.
func BenchmarkIndex(b *testing.B) {
	br, _ := benchBroker(b, 5000)
	dir := mountEmbedded(b, br)
	doc, err := os.ReadFile(filepath.Join(dir, "integrations.json"))
	if err != nil {
		b.Fatal(err)
	}
	read := func(b *testing.B, path string) {
		buf := make([]byte, len(doc)+4096)
		readFile(path, buf)
		b.ResetTimer()
		for b.Loop() {
			if n, err := readFile(path, buf); err != nil || n != len(doc) {
				b.Fatalf("read %d bytes, %v; want %d", n, err, len(doc))
			}
		}
	}
	b.Run("tmpfs", func(b *testing.B) {
		p := tmpfsFile(b)
		os.WriteFile(p, doc, 0o400)
		read(b, p)
	})
	b.Run("oauthfs", func(b *testing.B) { read(b, filepath.Join(dir, "integrations.json")) })
}

// BenchmarkReadersAcrossRefresh has 64 readers read access_token (open,
// read, close, then 1 ms apart) for 2 s: once on a token far from its
// refresh time (hot), once across a refresh. It reports the 99th
// percentile of the read latency of each.
func BenchmarkReadersAcrossRefresh(b *testing.B) {
	for b.Loop() {
		p := localprovider.New()
		// 6 s tokens: the margin is 1.5 s, the broker stops handing one
		// out at 3.75 s and refreshes a busy one ahead at 3 s, in the
		// second window of readers.
		p.SetLifetime(6 * time.Second)
		br, cfg := providerBroker(b, p, 1)
		signIn(b, br, p, "Bench0")
		dir := mountEmbedded(b, br)
		path := filepath.Join(dir, cfg.Integrations[0].GUID.String(), "access_token")
		before := p.Refreshes()
		hot := readers(b, path, 64, time.Now().Add(2*time.Second))
		across := readers(b, path, 64, time.Now().Add(2*time.Second))
		if p.Refreshes() == before {
			b.Fatal("no refresh happened while the readers read")
		}
		b.ReportMetric(float64(hot)/1e3, "p99-hot-µs")
		b.ReportMetric(float64(across)/1e3, "p99-refresh-µs")
		p.Close()
	}
}

// readers runs n readers of path until deadline and returns the 99th
// percentile of their read latencies.
func readers(b *testing.B, path string, n int, deadline time.Time) time.Duration {
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			buf := make([]byte, 4096)
			var mine []time.Duration
			for time.Now().Before(deadline) {
				start := time.Now()
				if _, err := readFile(path, buf); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
				time.Sleep(time.Millisecond)
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(all)
	if len(all) == 0 {
		b.Fatal("no reads")
	}
	return all[len(all)*99/100]
}

// BenchmarkStorm has 1,000 readers open access_token at once, all finding
// their token due for a refresh, and reports how many refreshes they
// caused (one is right).
func BenchmarkStorm(b *testing.B) {
	for b.Loop() {
		p := localprovider.New()
		br, cfg := providerBroker(b, p, 1)
		// A token nobody read: not refreshed ahead, due now.
		a, rt, _ := p.Grant()
		if err := br.Put(os.Getuid(), "Bench0", credential.Tokens{Access: []byte(a), Refresh: []byte(rt), Expiry: time.Now().Add(2 * time.Second)}); err != nil {
			b.Fatal(err)
		}
		dir := mountEmbedded(b, br)
		path := filepath.Join(dir, cfg.Integrations[0].GUID.String(), "access_token")
		time.Sleep(2 * time.Second)
		before := p.Refreshes()
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range 1000 {
			wg.Go(func() {
				buf := make([]byte, 4096)
				<-start
				if _, err := readFile(path, buf); err != nil {
					b.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		b.ReportMetric(float64(p.Refreshes()-before), "refreshes/storm")
		p.Close()
	}
}

// BenchmarkProviderConns has 500 users with 3 integrations each, all due,
// ask for their tokens at once (1,500 refreshes against one provider),
// and reports the connections the provider accepted.
func BenchmarkProviderConns(b *testing.B) {
	const users, integrations = 500, 3
	for b.Loop() {
		p := localprovider.New()
		br, cfg := providerBroker(b, p, integrations)
		for u := range users {
			for _, in := range cfg.Integrations {
				a, rt, _ := p.Grant()
				if err := br.Put(10000+u, in.Name, credential.Tokens{Access: []byte(a), Refresh: []byte(rt), Expiry: time.Now().Add(-time.Second)}); err != nil {
					b.Fatal(err)
				}
			}
		}
		before := p.Conns()
		var wg sync.WaitGroup
		start := time.Now()
		for u := range users {
			for _, in := range cfg.Integrations {
				wg.Go(func() {
					if _, err := br.Token(context.Background(), 10000+u, in.Name); err != nil {
						b.Error(err)
					}
				})
			}
		}
		wg.Wait()
		b.ReportMetric(float64(p.Conns()-before), "conns/storm")
		b.ReportMetric(time.Since(start).Seconds(), "storm-s")
		br.Close()
		p.Close()
	}
}

// benchBroker is a memory-only broker with n integrations, Bench0 to
// Bench<n-1>, and a token without refresh token for Bench0.
func benchBroker(b *testing.B, n int) (*broker.Broker, *config.Config) {
	var s strings.Builder
	s.WriteString("[broker]\nstate_dir = \"\"\n")
	for i := range n {
		fmt.Fprintf(&s, "[[integration]]\nname = \"Bench%d\"\nclient_id = \"id\"\nclient_secret = \"secret\"\nauth_url = \"https://example.com/auth\"\ntoken_url = \"https://example.com/token\"\n", i)
	}
	cfg, err := config.Parse("bench.toml", []byte(s.String()))
	if err != nil {
		b.Fatal(err)
	}
	br, err := broker.New(cfg, broker.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Close)
	if err := br.Put(os.Getuid(), "Bench0", credential.Tokens{Access: append([]byte(nil), token...), Expiry: time.Now().Add(24 * time.Hour)}); err != nil {
		b.Fatal(err)
	}
	return br, cfg
}

// providerBroker is a memory-only broker with n integrations on p.
func providerBroker(b *testing.B, p *localprovider.Provider, n int) (*broker.Broker, *config.Config) {
	var s strings.Builder
	s.WriteString("[broker]\nstate_dir = \"\"\n")
	for i := range n {
		fmt.Fprintf(&s, "[[integration]]\nname = \"Bench%d\"\nclient_id = %q\nclient_secret = %q\nauth_url = \"%s/authorize\"\ntoken_url = \"%s\"\n", i, p.ClientID, p.ClientSecret, p.URL, p.TokenURL())
	}
	cfg, err := config.Parse("bench.toml", []byte(s.String()))
	if err != nil {
		b.Fatal(err)
	}
	br, err := broker.New(cfg, broker.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Close)
	return br, cfg
}

// signIn stores a fresh grant from p for name.
func signIn(b *testing.B, br *broker.Broker, p *localprovider.Provider, name string) {
	a, rt, exp := p.Grant()
	if err := br.Put(os.Getuid(), name, credential.Tokens{Access: []byte(a), Refresh: []byte(rt), Expiry: exp}); err != nil {
		b.Fatal(err)
	}
}

// mountEmbedded mounts br for the current user, as 'oauthfs mount' does,
// and returns once the mount watches the broker.
func mountEmbedded(b *testing.B, br *broker.Broker) string {
	uid := os.Getuid()
	src := fusetest.NewWatched(broker.Source{B: br, UID: uid})
	dir := fusetest.Mount(b, fusefs.NewRoot(fusefs.Options{Source: src,
		UID: uint32(uid), GID: uint32(os.Getgid()), Timeout: 12 * time.Second, Context: b.Context()}))
	src.Wait(b)
	return dir
}

// BenchmarkSystemUsers has 100 users with 3 integrations each read the
// system mount at once (a process per user, as that uid), across one
// refresh of every token. It reports the token requests per user and
// integration (1: one per refresh, however many readers) and how much
// the live Go heap (after a collection) grew per view: the memory a view
// holds, which resident memory, moved by the runtime's own bookkeeping,
// cannot tell from noise.
func BenchmarkSystemUsers(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: the system mount, and readers of 100 uids")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		b.Skip("setpriv (util-linux) is missing")
	}
	const users, integrations = 100, 3
	for b.Loop() {
		p := localprovider.New()
		// 6 s tokens: every token read is refreshed ahead at 3 s, once,
		// while the readers read for 4 s.
		p.SetLifetime(6 * time.Second)
		br, cfg := providerBroker(b, p, integrations)
		for u := range users {
			for i := range integrations {
				a, rt, exp := p.Grant()
				if err := br.Put(60000+u, fmt.Sprintf("Bench%d", i), credential.Tokens{Access: []byte(a), Refresh: []byte(rt), Expiry: exp}); err != nil {
					b.Fatal(err)
				}
			}
		}
		dir := mountSystem(b, br)
		var files []string
		for _, in := range cfg.Integrations {
			files = append(files, filepath.Join(dir, in.GUID.String(), "access_token"))
		}
		before := heapKiB()
		requests := p.Requests()
		script := `end=$(($(date +%s)+4)); while [ "$(date +%s)" -lt "$end" ]; do cat "$@" >/dev/null || exit 1; done`
		var wg sync.WaitGroup
		for u := range users {
			wg.Go(func() {
				cmd := exec.Command("setpriv", append([]string{fmt.Sprintf("--reuid=%d", 60000+u), fmt.Sprintf("--regid=%d", 60000+u), "--clear-groups", "sh", "-c", script, "sh"}, files...)...)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Errorf("reader of uid %d: %v %s", 60000+u, err, out)
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(p.Requests()-requests)/float64(users*integrations), "requests/user-integration")
		b.ReportMetric(float64(heapKiB()-before)/users, "heap-KiB/view")
		p.Close()
	}
}

// heapKiB returns the live Go heap in KiB, after a collection.
func heapKiB() int {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int(m.HeapAlloc / 1024)
}

// mountSystem mounts br's system mount (root only) and returns once the
// caller's view watches the broker.
func mountSystem(b *testing.B, br *broker.Broker) string {
	fusetest.Require(b)
	if os.Geteuid() != 0 {
		b.Skip("the system mount needs root")
	}
	top := b.TempDir()
	os.Chmod(top, 0o755)
	os.Chmod(filepath.Dir(top), 0o755) // readers of other uids pass through
	dir := filepath.Join(top, "oauth")
	var watched sync.Map // uid -> *fusetest.Watched
	root := fusefs.NewSystemRoot(fusefs.SystemOptions{
		View: func(uid uint32) (fusefs.Source, uint32, error) {
			src := fusetest.NewWatched(broker.Source{B: br, UID: int(uid)})
			watched.Store(uid, src)
			return src, uid, nil
		},
		Watch:   broker.Source{B: br, UID: 0}.Watch,
		Timeout: 12 * time.Second,
		Context: b.Context(),
	})
	server, err := fusefs.MountSystem(dir, root)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { server.Unmount() })
	os.ReadDir(filepath.Join(dir, "by-name")) // makes the caller's view
	src, ok := watched.Load(uint32(os.Getuid()))
	if !ok {
		b.Fatal("no view made for the caller")
	}
	src.(*fusetest.Watched).Wait(b)
	return dir
}

// mountClient serves br's socket and mounts a session mount of it, as
// 'oauthfs broker' and 'oauthfs mount --broker' do.
func mountClient(b *testing.B, br *broker.Broker) string {
	sock := filepath.Join(b.TempDir(), "broker.sock")
	l, err := unixsock.Listen(sock, 0o600, 0o700)
	if err != nil {
		b.Fatal(err)
	}
	srv := &session.Server{B: br, Owner: -1}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	uid := os.Getuid()
	src := fusetest.NewWatched(client.NewCached(client.NewClient(sock, 12*time.Second), nil))
	dir := fusetest.Mount(b, fusefs.NewRoot(fusefs.Options{Source: src, UID: uint32(uid), GID: uint32(os.Getgid()), Timeout: 14 * time.Second, Context: b.Context()}))
	src.Wait(b)
	return dir
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
