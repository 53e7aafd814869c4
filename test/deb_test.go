package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The paths the Debian package owns or makes.
const (
	debBinary   = "/usr/bin/oauthfs"
	debBroker   = "/lib/systemd/system/oauthfs-broker.service"
	debMount    = "/usr/lib/systemd/user/oauthfs-mount.service"
	debConfig   = "/etc/oauthfs/config.toml"
	debState    = "/var/lib/oauthfs"
	debKey      = "/var/lib/oauthfs/key"
	debLogs     = "/var/log/oauthfs"
	debBash     = "/usr/share/bash-completion/completions/oauthfs"
	debZsh      = "/usr/share/zsh/vendor-completions/_oauthfs"
	debFish     = "/usr/share/fish/vendor_completions.d/oauthfs.fish"
	debTestVers = "1.2.3-4-gabcdef"
)

// buildDeb runs scripts/build-deb on the test's binary and returns the
// package's path.
func buildDeb(t *testing.T) string {
	t.Helper()
	_, err := exec.LookPath("dpkg-deb")
	requireE2E(t, err == nil, "dpkg-deb")
	cmd := exec.Command("../scripts/build-deb", binary, t.TempDir())
	cmd.Env = append(os.Environ(), "VERSION="+debTestVers, "DEB_COMPRESS=gzip") // xz takes ten seconds
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("build-deb: %v\n%s", err, errOutput(err))
	}
	return strings.TrimSpace(string(out))
}

func errOutput(err error) []byte {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.Stderr
	}
	return nil
}

// run runs a command and fails the test when it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDeb builds the Debian package, checks its contents and, as root,
// installs and removes it.
func TestDeb(t *testing.T) {
	deb := buildDeb(t)
	t.Run("contents", func(t *testing.T) { checkDebContents(t, deb) })
	t.Run("install", func(t *testing.T) { checkDebInstall(t, deb) })
}

// checkDebContents checks what make deb builds: its control fields, the
// conffile, and each file's owner and mode.
func checkDebContents(t *testing.T, deb string) {
	if want := "oauthfs_1.2.3+4.gabcdef_"; !strings.Contains(filepath.Base(deb), want) {
		t.Errorf("package %s; want a name with %s", deb, want)
	}
	for field, want := range map[string]string{
		"Package": "oauthfs", "Version": "1.2.3+4.gabcdef", "Depends": "fuse3", "Architecture": strings.TrimSpace(run(t, "dpkg", "--print-architecture")),
	} {
		if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, field)); got != want {
			t.Errorf("%s: %q, want %q", field, got, want)
		}
	}
	if got := run(t, "dpkg-deb", "-I", deb, "conffiles"); got != debConfig+"\n" {
		t.Errorf("conffiles = %q, want %s", got, debConfig)
	}
	list := run(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"drwxr-xr-x root/root .* ./\n",
		"-rwxr-xr-x root/root .* ." + debBinary + "\n",
		"-rw------- root/root .* ." + debConfig + "\n",
		"-rw-r--r-- root/root .* ." + debBroker + "\n",
		"-rw-r--r-- root/root .* ." + debMount + "\n",
		"-rw-r--r-- root/root .* ." + debBash + "\n",
		"-rw-r--r-- root/root .* ." + debZsh + "\n",
		"-rw-r--r-- root/root .* ." + debFish + "\n",
		"-rw-r--r-- root/root .* ./usr/share/doc/oauthfs/copyright\n",
	} {
		if !regexp.MustCompile(want).MatchString(list) {
			t.Errorf("the package lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, "/usr/local/") {
		t.Errorf("the package installs under /usr/local:\n%s", list)
	}
}

// checkDebInstall installs the package with dpkg -i, as CI runs as root,
// and checks what it puts where: the binary runs, each unit's ExecStart
// names it, the state directory is private with a key in it, completion
// loads; a reinstall keeps the key and the administrator's config; remove
// keeps the config, the key and the credentials; purge leaves nothing; a
// key restored before the first install is kept.
// It refuses to run where oauthfs is already installed or configured, so
// that it never touches a real installation.
func checkDebInstall(t *testing.T, deb string) {
	_, err := exec.LookPath("dpkg")
	requireE2E(t, err == nil && os.Geteuid() == 0, "root and dpkg (to install the Debian package)")
	for _, p := range []string{debBinary, debState, "/etc/oauthfs", debLogs} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists: this machine has an oauthfs of its own, which this test must not touch; run it on a clean machine", p)
		}
	}
	if exec.Command("dpkg", "-s", "oauthfs").Run() == nil {
		t.Fatal("an oauthfs package is installed already; this test must not replace it")
	}
	t.Cleanup(func() {
		if out, err := exec.Command("dpkg", "--purge", "oauthfs").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, out)
		}
	})
	run(t, "dpkg", "-i", deb)

	if out := run(t, debBinary, "version"); !strings.HasPrefix(out, "oauthfs ") {
		t.Errorf("oauthfs version = %q", out)
	}
	for _, unit := range []string{debBroker, debMount} {
		t.Run(filepath.Base(unit), func(t *testing.T) {
			b, err := os.ReadFile(unit)
			if err != nil {
				t.Fatal(err)
			}
			m := regexp.MustCompile(`(?m)^ExecStart=(\S+)`).FindSubmatch(b)
			if m == nil {
				t.Fatalf("no ExecStart in %s", unit)
			}
			exe := string(m[1])
			if exe != debBinary {
				t.Errorf("ExecStart runs %s, want %s", exe, debBinary)
			}
			if out := run(t, exe, "version"); !strings.HasPrefix(out, "oauthfs ") {
				t.Errorf("%s version = %q", exe, out)
			}
		})
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{debState, os.ModeDir | 0o700},
		{debKey, 0o600},
		{debLogs, os.ModeDir | 0o700},
		{debConfig, 0o600},
	} {
		if st, err := os.Stat(c.path); err != nil || st.Mode() != c.mode {
			t.Errorf("%s: %v, %v; want mode %v", c.path, st.Mode(), err, c.mode)
		}
	}
	key, _ := os.ReadFile(debKey)
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(key) {
		t.Errorf("key file = %d bytes; want 64 hex digits and a newline", len(key))
	}
	if out, err := exec.Command("bash", "-c", "source "+debBash+" && complete -p oauthfs").CombinedOutput(); err != nil || !strings.Contains(string(out), "oauthfs") {
		t.Errorf("bash completion: %v\n%s", err, out)
	}

	// A reinstall never overwrites the key, nor the administrator's config.
	cfg, _ := os.ReadFile(debConfig)
	edited := append(cfg, "# edited by the administrator\n"...)
	os.WriteFile(debConfig, edited, 0o600)
	run(t, "dpkg", "-i", "--force-confold", deb)
	if b, _ := os.ReadFile(debKey); !bytes.Equal(b, key) {
		t.Error("a reinstall changed the key file")
	}
	if b, _ := os.ReadFile(debConfig); !bytes.Equal(b, edited) {
		t.Error("a reinstall changed the edited config")
	}

	// remove takes the program away and keeps the credentials and config.
	os.WriteFile(filepath.Join(debState, "0.store"), []byte("sealed"), 0o600)
	run(t, "dpkg", "--remove", "oauthfs")
	for _, p := range []string{debBinary, debBroker, debMount, debBash, debZsh, debFish} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is left after dpkg --remove", p)
		}
	}
	for _, p := range []string{debConfig, debKey, filepath.Join(debState, "0.store")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("dpkg --remove took %s: %v", p, err)
		}
	}
	// Installing again carries on with the same key.
	run(t, "dpkg", "-i", "--force-confold", deb)
	if b, _ := os.ReadFile(debKey); !bytes.Equal(b, key) {
		t.Error("installing after a remove changed the key file")
	}

	// purge leaves nothing.
	run(t, "dpkg", "--purge", "oauthfs")
	for _, p := range []string{debBinary, debBroker, debConfig, "/etc/oauthfs", debState, debLogs} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is left after dpkg --purge", p)
		}
	}
	if exec.Command("dpkg", "-s", "oauthfs").Run() == nil {
		t.Error("dpkg still knows oauthfs after --purge")
	}

	// Store files without their key get no new key: the broker must say
	// the key is missing rather than seal new credentials with another.
	os.MkdirAll(filepath.Join(debState, "1000"), 0o700)
	os.WriteFile(filepath.Join(debState, "1000", "x.cred"), []byte("sealed"), 0o600)
	run(t, "dpkg", "-i", deb)
	if _, err := os.Lstat(debKey); err == nil {
		t.Error("the first install made a key beside store files sealed with a lost one")
	}
	run(t, "dpkg", "--purge", "oauthfs")

	// A key restored from a backup before the first install stays.
	restored := []byte(strings.Repeat("5a", 32) + "\n")
	os.MkdirAll(debState, 0o700)
	os.WriteFile(debKey, restored, 0o600)
	run(t, "dpkg", "-i", deb)
	if b, _ := os.ReadFile(debKey); !bytes.Equal(b, restored) {
		t.Error("the first install replaced a key that was there")
	}
}
