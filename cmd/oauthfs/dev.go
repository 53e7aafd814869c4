package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/host"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/unixsock"
	"github.com/oauthfs/oauthfs/signin"
)

// The dev mode's integrations.
const (
	devSignedIn  = "Demo"
	devSignedOut = "Other"
)

var devCommand = &command{
	name: "dev", args: "[MOUNTPOINT]",
	summary: "try it now: a local provider, a broker and a mount in one command",
	help: "Try oauthfs with no account anywhere: start a local OAuth 2.0 provider on\n" +
		"127.0.0.1, a broker configured for it with two integrations, sign in to\n" +
		"one (" + devSignedIn + ") through the real authorization-code + PKCE flow, and\n" +
		"mount at MOUNTPOINT (default ./oauth). Tokens expire quickly so that\n" +
		"refresh-on-read shows. Ctrl-C unmounts and removes everything.",
	flags: devFlags,
}

// devFlags declares the flags of oauthfs dev.
func devFlags(fs *flag.FlagSet) runFunc {
	lifetime := fs.Duration("token-lifetime", time.Minute, "lifetime of the provider's access tokens")
	level := fs.String("log-level", envOr("OAUTHFS_LOG_LEVEL", "info"), "log `level`: debug, info, warn or error")
	return func(stdout, stderr io.Writer) error {
		if fs.NArg() > 1 {
			return usageErrorf("dev takes at most one MOUNTPOINT")
		}
		if *lifetime < time.Second {
			return usageErrorf("--token-lifetime must be at least 1s")
		}
		mountpoint := "oauth"
		if fs.NArg() == 1 {
			mountpoint = fs.Arg(0)
		}
		log, err := newLogger(stderr, *level)
		if err != nil {
			return err
		}
		defer memguard.Purge()

		unlock, err := devLock(mountpoint)
		if err != nil {
			return err
		}
		defer unlock()
		created, err := devMountpoint(mountpoint)
		if err != nil {
			return err
		}
		if created {
			defer os.Remove(mountpoint)
		}
		tmp, err := os.MkdirTemp("", "oauthfs-dev-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)

		// The provider and the sign-in server on free loopback ports.
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		prov := localprovider.Start(pl)
		defer prov.Close()
		prov.SetLifetime(*lifetime)
		prov.SetPrefix("dev")
		web, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		defer web.Close()
		secret := filepath.Join(tmp, "client.secret")
		if err := os.WriteFile(secret, []byte(prov.ClientSecret), 0o600); err != nil {
			return err
		}
		sock, export := devSocket(tmp)
		text := fmt.Sprintf("[broker]\nsocket = %q\nlisten = %q\ncallback_url = \"http://%s/callback\"\nstate_dir = \"\"\n",
			sock, web.Addr(), web.Addr())
		for _, n := range []string{devSignedIn, devSignedOut} {
			text += fmt.Sprintf("\n[[integration]]\nname = %q\nclient_id = %q\nclient_secret_file = %q\nauth_url = \"%s/authorize\"\ntoken_url = \"%s/token\"\nrevocation_url = \"%s/revoke\"\nuserinfo_url = \"%s/userinfo\"\n",
				n, prov.ClientID, secret, prov.URL, prov.URL, prov.URL, prov.URL)
			if n == devSignedIn {
				// What an OpenID Connect provider with resource
				// indicators gives: an ID token, a token variant for
				// another resource, and one more resource to ask for.
				text += fmt.Sprintf("scopes = [\"openid\", \"read\"]\nresources = [%q]\n\n[[integration.token]]\nname = \"storage\"\nresource = %q\n", devResource, devVariantResource)
			} else {
				text += "scopes = [\"read\"]\n"
			}
		}
		cfgFile := filepath.Join(tmp, "config.toml")
		if err := os.WriteFile(cfgFile, []byte(text), 0o600); err != nil {
			return err
		}
		cfg, err := config.Load(cfgFile)
		if err != nil {
			return err
		}
		uid, gid := os.Getuid(), os.Getgid()
		h, err := startHost(cfg, host.Options{Owner: uid, Socket: sock, SocketMode: 0o600, DirMode: 0o700, Web: web, Log: log})
		if err != nil {
			return err
		}
		defer h.Stop()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		root := fusefs.NewRoot(fusefs.Options{Source: h.Source(uid), UID: uint32(uid), GID: uint32(gid),
			Timeout: cfg.Settings.RequestTimeout + fuseSlack, Logger: log, Context: ctx})
		server, err := fusefs.Mount(mountpoint, root, uint32(uid), uint32(gid))
		if err != nil {
			return err
		}
		done := make(chan struct{})
		go func() { server.Wait(); close(done) }()
		defer func() {
			select {
			case <-done:
			default:
				fusefs.Unmount(server, mountpoint, done)
			}
		}()

		if err := devSignIn(h.SignIn, uid); err != nil {
			return fmt.Errorf("dev: the automatic sign-in to %s failed: %w", devSignedIn, err)
		}
		if e := os.Getenv("OAUTHFS_BROKER"); e != "" && e != sock {
			export = true // this shell's setting would win over the search
		}
		if !export {
			log.Info("the other commands find this broker without settings", "socket", sock)
		}
		printDevGuide(stdout, devGuide{mnt: mountpoint, provider: prov.URL, socket: sock, export: export, lifetime: *lifetime})

		if s := waitForStop(done, nil); s != nil {
			log.Info("stopping", "signal", s.String())
			fusefs.Unmount(server, mountpoint, done)
		} else {
			log.Info("unmounted", "mountpoint", mountpoint)
		}
		fmt.Fprintln(stdout, "oauthfs dev: stopped and cleaned up.")
		return nil
	}
}

// devSignIn signs in to devSignedIn the way a browser would: the start
// link, Continue on its page, the provider's authorization endpoint (which
// approves at once), the callback with code and state and the PKCE
// exchange, and Yes on the final confirmation.
func devSignIn(si *signin.Table, uid int) error {
	link, err := si.Start(uid, devSignedIn)
	if err != nil {
		return err
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 15 * time.Second}
	resp, err := c.Get(link.URL)
	if err != nil {
		return err
	}
	page, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	// Continue on the start page, then Yes on the final confirmation.
	for _, step := range []struct{ path, action string }{{"/start", "continue"}, {"/confirm", "confirm"}} {
		form := url.Values{"action": {step.action}}
		for _, m := range hiddenRE.FindAllSubmatch(page, -1) {
			form.Set(string(m[1]), html.UnescapeString(string(m[2])))
		}
		start, _ := url.Parse(link.URL)
		req, _ := http.NewRequest("POST", start.Scheme+"://"+start.Host+step.path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", start.Scheme+"://"+start.Host)
		// Acting as the user's own browser, who asked for this sign-in
		// by running oauthfs dev: the Fetch metadata of a click.
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		req.Header.Set("Sec-Fetch-User", "?1")
		if resp, err = c.Do(req); err != nil {
			return err
		}
		page, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := si.Wait(ctx, uid, link.ID)
	if err != nil {
		return err
	}
	if st.Status != signin.SignedIn {
		return fmt.Errorf("%s (HTTP %d)", st.Message, resp.StatusCode)
	}
	return nil
}

// hiddenRE finds the hidden fields of the sign-in confirmation form.
var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

// devSocket chooses where dev's broker listens: the default socket,
// which the other commands find with no setting (the first place of
// their search, see resolveSocket), when no broker answers there or at
// the system daemon's socket; else a private one in dir, so that dev
// never hides a real broker from the user's other shells. It reports
// whether the commands then need OAUTHFS_BROKER to find it.
func devSocket(dir string) (string, bool) {
	private := filepath.Join(dir, "broker.sock")
	def := filepath.Join(config.RuntimeDir(), "broker.sock")
	for _, p := range []string{config.SystemSocket, def} {
		if answers(p) {
			return private, true
		}
	}
	return def, false
}

// devGuide is what printDevGuide shows.
type devGuide struct {
	mnt, provider, socket string
	export                bool // the commands need OAUTHFS_BROKER
	lifetime              time.Duration
}

func printDevGuide(w io.Writer, g devGuide) {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	tok := q(filepath.Join(g.mnt, "by-name", devSignedIn, "access_token"))
	cwd, _ := os.Getwd()
	self := selfName()
	if strings.ContainsFunc(self, func(r rune) bool { return !strings.ContainsRune(shellSafe, r) }) {
		self = q(self)
	}
	export := ""
	if g.export {
		export = "  export OAUTHFS_BROKER=" + q(g.socket) + "\n"
	}
	fmt.Fprintf(w, `oauthfs dev is running.

  provider   %s (approves every sign-in; access tokens live %v)
  mount      %s
  broker     %s
  signed in  %s (through the authorization-code + PKCE flow); %s is not

Try, in another terminal:

  cd %s
  ls -l %s
  cat %s; echo
  cat %s; echo
  curl -H @<(printf 'Authorization: Bearer %%s\n' "$(<%s)") %s/userinfo
  python3 -c 'import pathlib,sys; print(pathlib.Path(sys.argv[1]).read_text())' %s
  cat %s               # Required key not available
  jq -r '.[] | "\(.name): \(.status)"' %s

%s  %s list
  %s login %s            # opens a sign-in link
  %s settings                # the Managed Credentials page
  %s logout %s

Read the token again after %v to see it refreshed on read.
Press Ctrl-C to unmount and clean up.
`, g.provider, g.lifetime, g.mnt, g.socket, devSignedIn, devSignedOut,
		q(cwd), q(g.mnt), tok, q(filepath.Join(g.mnt, "by-name", devSignedIn, "expiry")), tok, g.provider, tok,
		q(filepath.Join(g.mnt, "by-name", devSignedOut, "access_token")), q(filepath.Join(g.mnt, "integrations.json")),
		export, self, self, devSignedOut, self, self, devSignedIn, g.lifetime*3/4)
}

// shellSafe are the characters a shell word needs no quotes for.
const shellSafe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-+=:,@%"

// The resources of oauthfs dev's signed-in integration: its token
// variant's, and one more that 'oauthfs token --resource' may ask for.
const (
	devVariantResource = "https://storage.dev.test"
	devResource        = "https://vault.dev.test"
)

// selfName is how the guide names this program so that its commands work
// as typed in another terminal (after the guide's cd): oauthfs when that
// is this program on PATH; else the path it was started by when it has a
// slash (bin/oauthfs after make demo); else its absolute path.
func selfName() string {
	exe, err := os.Executable()
	if err != nil {
		return "oauthfs"
	}
	if p, err := exec.LookPath("oauthfs"); err == nil {
		if a, b := fileID(p), fileID(exe); a != "" && a == b {
			return "oauthfs"
		}
	}
	if strings.Contains(os.Args[0], "/") {
		return os.Args[0]
	}
	return exe
}

// fileID names the file at path by device and inode, or "".
func fileID(path string) string {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// devMountpoint checks (or creates) the mount point: it must be an empty
// directory that nothing is mounted on. It reports whether it created it.
func devMountpoint(dir string) (bool, error) {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return false, fmt.Errorf("dev: create the mount point: %w", err)
		}
		return true, nil
	}
	if err := fusefs.PrepareMountpoint(dir); err != nil {
		return false, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("dev: %w", err)
	}
	if len(entries) > 0 {
		return false, withHint(fmt.Errorf("dev: the mount point %s is not empty (%d entries): %w", dir, len(entries), fusefs.ErrMountpoint),
			"name an empty or new directory: oauthfs dev DIR")
	}
	return false, nil
}

// devLock makes sure one 'oauthfs dev' runs per user at a time. The lock
// file lives in the user's private runtime directory, which must belong
// to the user; it is opened without following symlinks and never
// truncated, so another user cannot make dev write to a file of theirs.
func devLock(mnt string) (func(), error) {
	dir := config.RuntimeDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	if err := unixsock.CheckSocketDir(dir); err != nil {
		return nil, withHint(fmt.Errorf("dev: %w", err), "set XDG_RUNTIME_DIR to a directory of your own (usually /run/user/%d); %s is not yours", os.Getuid(), dir)
	}
	path := filepath.Join(dir, "dev.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("dev: lock %s: %w", path, err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || st.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		f.Close()
		return nil, fmt.Errorf("dev: lock %s is not a regular file of yours; remove it", path)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		who, _ := io.ReadAll(io.LimitReader(f, lockRecord))
		f.Close()
		return nil, withHint(fmt.Errorf("dev: another oauthfs dev is running (%s)", strings.TrimSpace(string(who))),
			"stop it with Ctrl-C first; one runs per user at a time")
	}
	abs, _ := filepath.Abs(mnt)
	f.WriteAt(lockText("pid "+strconv.Itoa(os.Getpid())+", mounted at "+abs), 0)
	return func() { f.WriteAt(lockText(""), 0); f.Close() }, nil
}

// lockRecord is the fixed size of the lock file's text, padded with
// spaces, so that it is rewritten in place rather than truncated.
const lockRecord = 4096

func lockText(s string) []byte {
	b := []byte(strings.Repeat(" ", lockRecord))
	copy(b, printable.String(s, lockRecord-1))
	b[lockRecord-1] = '\n'
	return b
}
