package broker

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/testutil"
)

// crashKills is how many times TestCrashDuringRefreshes kills the broker.
const crashKills = 60

// TestCrashDuringRefreshes kills a broker process with SIGKILL at random
// moments while it refreshes in a loop against a rotating provider, and
// checks after every kill that the restarted process refreshes with the
// refresh token it finds on disk.
//
// The provider keeps a rotated-away refresh token valid until its
// successor is first used (a rotation grace period). No client can do
// better against a provider without one: a crash between the provider's
// answer and the fsync loses the only valid token. What the test proves is
// that the store is never torn and never more than one, unused, rotation
// behind: the new refresh token is on disk before it is ever used.
func TestCrashDuringRefreshes(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	p := localprovider.New()
	defer p.Close()
	p.SetRotateGrace(true)
	dir := t.TempDir()
	b := mustPersistent(t, p, dir)
	a, r, exp := p.Grant()
	if err := b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp}); err != nil {
		t.Fatal(err)
	}

	run := func(loop bool) (*exec.Cmd, *bufio.Scanner) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.v")
		cmd.Env = append(os.Environ(), "OAUTHFS_CRASH_HELPER="+dir+"|"+p.URL+"|"+fmt.Sprint(loop))
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, bufio.NewScanner(out)
	}
	before := p.Refreshes()
	for i := 0; i < crashKills; i++ {
		cmd, sc := run(true)
		// Wait for the first refresh of this process: it proves that the
		// token left on disk by the previous, killed, process works.
		ready := false
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "FAIL:") {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("kill %d: restarted broker: %s", i, line)
			}
			if line == "refreshing" {
				ready = true
				break
			}
		}
		if !ready {
			cmd.Wait()
			t.Fatalf("kill %d: helper exited before refreshing", i)
		}
		time.Sleep(time.Duration(rand.IntN(30_000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		go func() {
			for sc.Scan() {
			}
		}()
		cmd.Wait()
	}
	cmd, sc := run(false)
	var out []string
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("final check: %v\n%s", err, strings.Join(out, "\n"))
	}
	// Each process refreshes once before it may be killed, and the final
	// check once more: beyond that the loop must have run (a loaded
	// machine runs it less; it ran about 2 each in a quiet one).
	if n := p.Refreshes() - before; n <= crashKills+1+crashKills/10 {
		t.Errorf("only %d refreshes over %d kills; the loop did not run", n, crashKills)
	}
	t.Logf("%d kills, %d refreshes", crashKills, p.Refreshes()-before)
}

// TestCrashHelper is the broker process that TestCrashDuringRefreshes
// kills. It does nothing unless OAUTHFS_CRASH_HELPER is set.
func TestCrashHelper(t *testing.T) {
	env := os.Getenv("OAUTHFS_CRASH_HELPER")
	if env == "" {
		t.Skip("helper process only")
	}
	parts := strings.Split(env, "|")
	dir, url, loop := parts[0], parts[1], parts[2] == "true"
	// No t.TempDir here: a process killed with SIGKILL never removes it.
	b, err := persistentCfg(t, url, dir, dir)
	if err != nil {
		fmt.Printf("FAIL: start: %v\n", err)
		os.Exit(1)
	}
	var clk testutil.Clock
	b.now = clk.Now
	for i := 0; ; i++ {
		clk.Advance(2 * time.Hour) // every Token call must refresh
		if _, err := b.Token(context.Background(), uid, "Test"); err != nil {
			fmt.Printf("FAIL: refresh %d: %v\n", i, err)
			os.Exit(1)
		}
		if i == 0 {
			fmt.Println("refreshing")
		}
		if !loop {
			return
		}
	}
}
