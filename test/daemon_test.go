package test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/fusetest"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

// daemonEnv is an 'oauthfs broker' with a config on a test provider.
type daemonEnv struct {
	*cliEnv
	state string
}

func newDaemonEnv(t *testing.T) *daemonEnv {
	t.Helper()
	fusetest.Require(t)
	p := localprovider.New()
	t.Cleanup(p.Close)
	dir := t.TempDir()
	d := &daemonEnv{cliEnv: &cliEnv{p: p, dir: dir, mnt: filepath.Join(dir, "oauth"), cfg: filepath.Join(dir, "config.toml"),
		socket: filepath.Join(dir, "run", "broker.sock")}, state: filepath.Join(dir, "state")}
	os.Mkdir(d.mnt, 0o700)
	d.writeConfig(t, "Test", "Other")
	return d
}

func (d *daemonEnv) writeConfig(t *testing.T, names ...string) {
	t.Helper()
	s := fmt.Sprintf("[broker]\nsocket = %q\nlisten = %q\nstate_dir = %q\nrequest_timeout = \"2s\"\n", d.socket, freeAddr(t), d.state)
	for _, n := range names {
		s += fmt.Sprintf("[[integration]]\nname = %q\nclient_id = \"test-client\"\nclient_secret = \"test-secret\"\nauth_url = \"%s/authorize\"\ntoken_url = \"%s/token\"\n", n, d.p.URL, d.p.URL)
	}
	if err := os.WriteFile(d.cfg, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startBroker runs 'oauthfs broker' and waits until its socket answers.
func (d *daemonEnv) startBroker(t *testing.T) *proc {
	t.Helper()
	return startProc(t, exec.Command(binary, "broker", "--config", d.cfg, "--log-level", "debug"), syscall.SIGTERM, "",
		func(p *proc) bool { return strings.Contains(p.stderr.String(), "broker listening") })
}

// startClientMount runs 'oauthfs mount --broker' and waits for the mount.
func (d *daemonEnv) startClientMount(t *testing.T) *proc {
	t.Helper()
	return startProc(t, exec.Command(binary, "mount", "--broker", d.socket, "--log-level", "debug", d.mnt), syscall.SIGTERM, d.mnt,
		func(*proc) bool { return isMounted(d.mnt) })
}

func (d *daemonEnv) readToken(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(d.mnt, "by-name", name, "access_token"))
	return string(b), err
}

func TestDaemonReloadAndOutage(t *testing.T) {
	d := newDaemonEnv(t)
	br := d.startBroker(t)
	m := d.startClientMount(t)
	access, refresh := d.seed(t, 3600)
	defer func() {
		// The mount's debug lines (event stream, failed operations) are
		// the likeliest to leak; they must be on for the check to count.
		if !strings.Contains(m.stderr.String(), "level=DEBUG") {
			t.Errorf("the mount logged no debug lines")
		}
		// The mount bounds its calls by the broker's request_timeout.
		if !strings.Contains(m.stderr.String(), "request_timeout=2s") {
			t.Errorf("the session mount did not learn the broker's request_timeout (2s):\n%s", m.stderr)
		}
		// Nothing secret in either log, at debug level.
		for name, logs := range map[string]string{"broker": br.stderr.String(), "mount": m.stderr.String()} {
			for _, secret := range []string{access, refresh, "test-secret"} {
				if strings.Contains(logs, secret) {
					t.Errorf("the %s log holds a secret", name)
				}
			}
			if !strings.Contains(logs, "msg=") {
				t.Errorf("the %s log is empty; the check proves nothing", name)
			}
		}
	}()
	if got, err := d.readToken("Test"); err != nil || got != access {
		t.Fatalf("read through the session mount = %q, %v", got, err)
	}

	t.Run("SIGHUP adds and removes integrations", func(t *testing.T) {
		d.writeConfig(t, "Test", "Added")
		br.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, func() bool { _, err := os.Stat(filepath.Join(d.mnt, "by-name", "Added")); return err == nil })
		if _, err := d.readToken("Other"); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("removed integration = %v; want ENOENT", err)
		}
		if got, err := d.readToken("Test"); err != nil || got != access {
			t.Errorf("the remaining integration = %q, %v; want its token kept", got, err)
		}
	})
	t.Run("a broken config is refused", func(t *testing.T) {
		good, _ := os.ReadFile(d.cfg)
		os.WriteFile(d.cfg, append(bytes.Clone(good), []byte("\n[[integration]]\nname = \"Test\"\n")...), 0o644)
		br.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, func() bool {
			return strings.Contains(br.stderr.String(), "reload refused; the old configuration stays in force")
		})
		if !strings.Contains(br.stderr.String(), d.cfg) {
			t.Errorf("the refusal does not name the file:\n%s", br.stderr)
		}
		if got, err := d.readToken("Test"); err != nil || got != access {
			t.Errorf("after a refused reload: %q, %v", got, err)
		}
		if _, err := os.Stat(filepath.Join(d.mnt, "by-name", "Added")); err != nil {
			t.Errorf("after a refused reload the old integrations should stay: %v", err)
		}
		os.WriteFile(d.cfg, good, 0o644)
	})
	t.Run("broker outage", func(t *testing.T) {
		br.cmd.Process.Signal(syscall.SIGTERM)
		<-br.done
		// Within request_timeout (2 s here) of the broker going away, opens
		// fail with EIO: the mount stops reusing tokens as soon as it sees
		// its event stream close, which takes milliseconds.
		start := time.Now()
		for {
			_, err := d.readToken("Test")
			if errors.Is(err, syscall.EIO) {
				break
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("read %v after the broker went away = %v; want EIO", time.Since(start), err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("reads failed with EIO %v after the broker exited", time.Since(start).Round(time.Millisecond))
		if !isMounted(d.mnt) {
			t.Fatalf("the mount went away with the broker")
		}
		d.startBroker(t) // same state_dir: the credentials were persisted
		waitFor(t, func() bool { got, err := d.readToken("Test"); return err == nil && got == access })
	})
}

func TestDaemonSocketTakeover(t *testing.T) {
	d := newDaemonEnv(t)
	br := d.startBroker(t)
	out, err := exec.Command(binary, "broker", "--config", d.cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "a broker is already listening on "+d.socket) {
		t.Errorf("a second broker on a live socket = %q, %v; want a refusal", out, err)
	}
	br.cmd.Process.Kill() // leaves the socket file behind
	<-br.done
	if _, err := os.Stat(d.socket); err != nil {
		t.Fatalf("the killed broker left no socket: %v", err)
	}
	d.startBroker(t) // takes over the dead socket
	if _, _, code := d.oauthfs(t, "list"); code != 0 {
		t.Errorf("list against the new broker: exit %d", code)
	}
}
