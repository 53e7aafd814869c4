package pgtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv("OAUTHFS_PGTEST_CHILD") == "1" {
		child()
	}
	Main(m)
}

// child starts a cluster, prints its directory and the server's pid, and
// waits to be killed (TestKilledParent).
func child() {
	c, err := NewCluster()
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(c.dir, c.server.cmd.Process.Pid)
	select {}
}

// TestCluster starts a cluster, uses it, stops it and starts it again on
// the same port, and checks that Close leaves neither files nor
// processes behind.
func TestCluster(t *testing.T) {
	require(t)
	tmp := searchableTempDir(t)
	t.Setenv("TMPDIR", tmp)
	t0 := time.Now()
	c, err := NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initdb and start: %v", time.Since(t0))
	defer c.Close()

	if err := c.CreateDB("app"); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Psql("app", "SELECT 1"); err != nil || out != "1" {
		t.Fatalf("SELECT 1 = %q, %v", out, err)
	}
	if _, err := c.Psql("app", "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')"); err != nil {
		t.Fatal(err)
	}
	if want := "postgres://oauthfs@127.0.0.1:" + strconv.Itoa(c.Port()) + "/app?sslmode=disable"; c.DSN("app") != want {
		t.Errorf("DSN = %q, want %q", c.DSN("app"), want)
	}

	// Down: nothing answers on the port; up again on the same one, with
	// the data.
	port := c.Port()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
		conn.Close()
		t.Fatal("the stopped server accepts connections")
	}
	if err := c.Stop(); err != nil {
		t.Errorf("Stop again = %v", err)
	}
	t0 = time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart: %v", time.Since(t0))
	if c.Port() != port {
		t.Errorf("port after Start = %d, want %d", c.Port(), port)
	}
	if err := c.Start(); err == nil {
		t.Error("Start of a running cluster succeeded")
	}
	if out, err := c.Psql("app", "SELECT v FROM kept"); err != nil || out != "x" {
		t.Fatalf("after restart: %q, %v", out, err)
	}

	pid := c.server.cmd.Process.Pid
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close again = %v", err)
	}
	if err := c.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
	if alive(pid) {
		t.Errorf("postgres %d still there after Close", pid)
	}
	if p := procsIn(c.dir); len(p) > 0 {
		t.Errorf("processes still in %s after Close: %v", c.dir, p)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("Close left %v in TMPDIR", left)
	}
}

// TestStartPortTaken checks that Start fails at once, with the log,
// when its port is taken while the cluster is stopped, and works once
// the port is free again.
func TestStartPortTaken(t *testing.T) {
	c := Own(t)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port())))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start()
	l.Close()
	if err == nil || !strings.Contains(err.Error(), "could not bind") {
		t.Fatalf("Start on a taken port = %v, want the log's could not bind", err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Psql("postgres", "SELECT 1"); err != nil || out != "1" {
		t.Fatalf("SELECT 1 = %q, %v", out, err)
	}
}

// TestShared checks that each call, in parallel tests too, gets a new
// empty database of the same cluster.
func TestShared(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	for i := range 4 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			dsn := Shared(t)
			mu.Lock()
			again := seen[dsn]
			seen[dsn] = true
			mu.Unlock()
			if again {
				t.Fatalf("Shared gave %s twice", dsn)
			}
			db := dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
			if !strings.HasPrefix(db, "t_testshared_"+strconv.Itoa(i)+"_") {
				t.Errorf("database %q of %s", db, dsn)
			}
			if _, err := shared.c.Psql(db, "CREATE TABLE mine (v int)"); err != nil {
				t.Error(err)
			}
			if out, err := shared.c.Psql(db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"); err != nil || out != "1" {
				t.Errorf("tables in %s: %q, %v", db, out, err)
			}
		})
	}
}

// TestKilledParent checks that the server goes when the test binary that
// started it is killed.
func TestKilledParent(t *testing.T) {
	require(t)
	tmp := searchableTempDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "OAUTHFS_PGTEST_CHILD=1", "TMPDIR="+tmp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, rerr := bufio.NewReader(out).ReadString('\n')
	cmd.Process.Kill()
	cmd.Wait()
	var dir string
	var pid int
	if _, err := fmt.Sscan(line, &dir, &pid); err != nil {
		t.Fatalf("child said %q (%v, %v)", line, rerr, err)
	}
	deadline := time.Now().Add(Timeout)
	for alive(pid) || len(procsIn(dir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("postgres %d (or its children %v) outlived the killed test binary", pid, procsIn(dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.HasPrefix(dir, tmp) {
		t.Errorf("cluster directory %s not in TMPDIR %s", dir, tmp)
	}
}

func TestDBName(t *testing.T) {
	if got := dbName("TestA/b-C d"); got != "t_testa_b_c_d" {
		t.Errorf("dbName = %q", got)
	}
	if got := dbName(strings.Repeat("x", 100)); len(got) != 42 {
		t.Errorf("len(dbName(100 bytes)) = %d", len(got))
	}
}

// searchableTempDir returns a new temporary directory, removed when the
// test ends, that postgres may reach when it runs as another user
// (t.TempDir's, and the one above it, are 0700).
func searchableTempDir(t *testing.T) string {
	tmp, err := os.MkdirTemp("", "oauthfs-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	return tmp
}

// alive reports whether process pid runs: exists and is no zombie (an
// orphan's zombie lasts until init reaps it).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

// procsIn returns the pids of the processes whose working directory is
// in dir (postgres and its children work in the data directory).
func procsIn(dir string) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && strings.HasPrefix(cwd, dir+"/") {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
