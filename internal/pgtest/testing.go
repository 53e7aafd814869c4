package pgtest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// shared is the cluster of Shared, started on first use and closed by
// Main.
var shared struct {
	main  atomic.Bool // Main is running the tests
	once  sync.Once
	c     *Cluster
	err   error
	count atomic.Int64 // databases made
}

// Main runs the tests of m, closes the cluster that Shared started, if
// any, and exits with the tests' status. Call it from TestMain of every
// package that uses Shared.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain that has more to do after the tests: it
// returns the status instead of exiting.
func Run(m *testing.M) int {
	shared.main.Store(true)
	code := m.Run()
	shared.once.Do(func() {}) // so that the cluster is seen, and none starts now
	if shared.c != nil {
		if err := shared.c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Shared returns the DSN of a new empty database in the cluster that the
// test binary shares, starting the cluster on first use. The database is
// not dropped: it goes with the cluster when Main closes it. Shared
// skips the test, or fails it under OAUTHFS_REQUIRE_E2E=1, when
// PostgreSQL is not installed.
func Shared(t testing.TB) string {
	t.Helper()
	require(t)
	if !shared.main.Load() {
		t.Fatal("pgtest.Shared needs pgtest.Main(m) in the package's TestMain, to close the cluster")
	}
	shared.once.Do(func() { shared.c, shared.err = NewCluster() })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	name := fmt.Sprintf("%s_%d", dbName(t.Name()), shared.count.Add(1))
	if err := shared.c.CreateDB(name); err != nil {
		t.Fatal(err)
	}
	return shared.c.DSN(name)
}

// Own starts a cluster for the test alone, closed when the test ends:
// for tests that stop and start the server. It skips the test, or fails
// it under OAUTHFS_REQUIRE_E2E=1, when PostgreSQL is not installed.
func Own(t testing.TB) *Cluster {
	t.Helper()
	require(t)
	c, err := NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// require skips the test, or fails it under OAUTHFS_REQUIRE_E2E=1, when
// PostgreSQL is not available.
func require(t testing.TB) {
	t.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv("OAUTHFS_REQUIRE_E2E") == "1" {
		t.Fatalf("PostgreSQL is required (OAUTHFS_REQUIRE_E2E=1) but unavailable: %v; run make deps", err)
	}
	t.Skipf("PostgreSQL unavailable: %v; run make deps", err)
}

// dbName returns the start of a database name for the test named name:
// its letters and digits, lower case, the rest as underscores, at most 40
// bytes.
func dbName(name string) string {
	b := []byte(strings.ToLower(name))
	for i, ch := range b {
		if (ch < 'a' || ch > 'z') && (ch < '0' || ch > '9') {
			b[i] = '_'
		}
	}
	if len(b) > 40 {
		b = b[:40]
	}
	return "t_" + string(b)
}
