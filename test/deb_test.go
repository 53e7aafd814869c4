package test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/store"
)

// The paths the Debian package owns or makes.
const (
	debBinary = "/usr/bin/oauthfs"
	debBroker = "/lib/systemd/system/oauthfs-broker.service"
	debMount  = "/usr/lib/systemd/user/oauthfs-mount.service"
	debEtc    = "/etc/oauthfs"
	debConfig = "/etc/oauthfs/config.toml"
	debState  = "/var/lib/oauthfs"
	debKey    = "/var/lib/oauthfs/key"
	debLogs   = "/var/log/oauthfs"
	debBash   = "/usr/share/bash-completion/completions/oauthfs"
	debZsh    = "/usr/share/zsh/vendor-completions/_oauthfs"
	debFish   = "/usr/share/fish/vendor_completions.d/oauthfs.fish"
	debDoc    = "/usr/share/doc/oauthfs"

	// debTestVersion is the VERSION the test builds with, and
	// debTestDebVersion the Debian version it becomes.
	debTestVersion    = "v1.2.3-4-gabcdef"
	debTestDebVersion = "1.2.3+4.gabcdef"
)

// debFiles are the files the package installs and dpkg takes away on
// remove, with their modes.
var debFiles = []struct {
	path string
	mode os.FileMode
}{
	{debBinary, 0o755},
	{debBroker, 0o644},
	{debMount, 0o644},
	{debBash, 0o644},
	{debZsh, 0o644},
	{debFish, 0o644},
	{debDoc + "/README.md", 0o644},
	{debDoc + "/copyright", 0o644},
	{debDoc + "/changelog.gz", 0o644},
}

// buildDeb runs scripts/build-deb on the test's binary into a temporary
// directory and returns the package's path.
func buildDeb(t *testing.T) string {
	t.Helper()
	_, err := exec.LookPath("dpkg-deb")
	requireE2E(t, err == nil, "dpkg-deb")
	out := debScript(t, []string{"VERSION=" + debTestVersion, "DEB_COMPRESS=gzip"}, binary, t.TempDir()) // xz takes seconds
	return strings.TrimSpace(out)
}

// debScript runs scripts/build-deb with args and env added to the test's
// environment, and returns its standard output.
func debScript(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("../scripts/build-deb", args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("build-deb %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out)
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

// debStatus is dpkg's status of the package pkg, or "" when dpkg knows
// nothing of it.
func debStatus(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", pkg).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// TestDeb builds the Debian package, checks what is in it and, as root,
// installs, reinstalls, removes and purges it.
func TestDeb(t *testing.T) {
	deb := buildDeb(t)
	t.Run("version", testDebVersion)
	t.Run("control", func(t *testing.T) { checkDebControl(t, deb) })
	t.Run("contents", func(t *testing.T) { checkDebContents(t, deb) })
	t.Run("files", func(t *testing.T) { checkDebFiles(t, deb) })
	t.Run("install", func(t *testing.T) { checkDebInstall(t, deb) })
}

// testDebVersion checks how build-deb makes a Debian version of
// VERSION, and that the versions sort as the builds they name.
func testDebVersion(t *testing.T) {
	for _, c := range []struct{ version, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-rc1", "1.2.3~rc1"},
		{"v1.2.3-4-gabcdef", "1.2.3+4.gabcdef"},
		{"v1.2.3-4-gabcdef-dirty", "1.2.3+4.gabcdef+dirty"},
		{"v1.2.3-rc1-4-gabcdef", "1.2.3~rc1+4.gabcdef"},
		{"v1.2_3", "1.2.3"},
		{"abcdef", "0.0~git19700102000000.abcdef"},
		{"abcdef-dirty", "0.0~git19700102000000.abcdef.dirty"},
		{"devel", "0.0~git19700102000000.devel"},
		{"4d4c941-dirty", "0.0~git19700102000000.4d4c941.dirty"},
		{"1234567", "0.0~git19700102000000.1234567"},
	} {
		t.Run(c.version, func(t *testing.T) {
			got := strings.TrimSpace(debScript(t, []string{"VERSION=" + c.version, "SOURCE_DATE_EPOCH=86400"}, "--print-version"))
			if got != c.want {
				t.Errorf("VERSION=%s gives %q, want %q", c.version, got, c.want)
			}
		})
	}
	// Each is older than the next.
	order := []string{"0.0~git19700102000000.ffffff", "0.0~git19700102000001.000000", "1.2.3~rc1", "1.2.3~rc1+4.gabcdef", "1.2.3", "1.2.3+4.gabcdef", "1.2.3+4.gabcdef+dirty", "1.2.4~rc1"}
	for i := 1; i < len(order); i++ {
		if err := exec.Command("dpkg", "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
			t.Errorf("%s does not sort before %s: %v", order[i-1], order[i], err)
		}
	}
}

// checkDebControl checks the control fields, the conffile and the
// maintainer scripts.
func checkDebControl(t *testing.T, deb string) {
	if want := "oauthfs_" + debTestDebVersion + "_"; !strings.HasPrefix(filepath.Base(deb), want) {
		t.Errorf("package %s; want a name starting %s", deb, want)
	}
	arch := strings.TrimSpace(run(t, "dpkg", "--print-architecture"))
	for _, c := range []struct{ field, want string }{
		{"Package", "oauthfs"},
		{"Version", debTestDebVersion},
		{"Architecture", arch},
		{"Section", "utils"},
		{"Priority", "optional"},
	} {
		if got := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, c.field)); got != c.want {
			t.Errorf("%s: %q, want %q", c.field, got, c.want)
		}
	}
	// A cgo binary needs the glibc it was linked against.
	depends := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, "Depends"))
	bin, _ := os.ReadFile(binary)
	want := regexp.MustCompile(`^fuse3$`)
	if bytes.Contains(bin, []byte("GLIBC_2.")) {
		want = regexp.MustCompile(`^libc6 \(>= 2\.[0-9]+\), fuse3$`)
	}
	if !want.MatchString(depends) {
		t.Errorf("Depends: %q, want %s", depends, want)
	}
	for _, field := range []string{"Maintainer", "Installed-Size", "Description"} {
		if strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, field)) == "" {
			t.Errorf("no %s field", field)
		}
	}
	if got := run(t, "dpkg-deb", "--info", deb, "conffiles"); got != debConfig+"\n" {
		t.Errorf("conffiles = %q, want %s", got, debConfig)
	}
	if got := run(t, "dpkg-deb", "--info", deb, "md5sums"); !strings.Contains(got, " usr/bin/oauthfs\n") || strings.Contains(got, "etc/") {
		t.Errorf("md5sums lists no usr/bin/oauthfs, or a conffile:\n%s", got)
	}

	ctrl := t.TempDir()
	run(t, "dpkg-deb", "--control", deb, ctrl)
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(ctrl, script)
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("no %s: %v", script, err)
			continue
		}
		if st.Mode().Perm() != 0o755 {
			t.Errorf("%s has mode %v, want 0755", script, st.Mode().Perm())
		}
		// Maintainer scripts run with /bin/sh: dash must parse them.
		if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", script, err, out)
		}
	}
}

// checkDebContents checks each file's owner and mode as dpkg-deb lists
// them, and that nothing goes under /usr/local.
func checkDebContents(t *testing.T, deb string) {
	list := run(t, "dpkg-deb", "--contents", deb)
	want := []string{
		`drwxr-xr-x root/root .* \./` + "\n",
		`-rw------- root/root .* \.` + debConfig + "\n",
	}
	for _, f := range debFiles {
		want = append(want, regexp.QuoteMeta(fileMode(f.mode))+` root/root .* \.`+regexp.QuoteMeta(f.path)+"\n")
	}
	for _, w := range want {
		if !regexp.MustCompile(w).MatchString(list) {
			t.Errorf("the package lacks %q:\n%s", w, list)
		}
	}
	if strings.Contains(list, "/usr/local/") {
		t.Errorf("the package installs under /usr/local:\n%s", list)
	}
	if regexp.MustCompile(`(?m)^[^d].* \./var/`).MatchString(list) {
		t.Errorf("the package ships files under /var (the state is made by postinst and the broker):\n%s", list)
	}
}

// fileMode is how ls and tar show a regular file with permissions perm.
func fileMode(perm os.FileMode) string { return "-" + perm.String()[1:] }

// checkDebFiles unpacks the package and checks the units' programs and
// the shell completion without installing anything.
func checkDebFiles(t *testing.T, deb string) {
	dir := t.TempDir()
	run(t, "dpkg-deb", "--extract", deb, dir)
	for _, unit := range []string{debBroker, debMount} {
		t.Run(filepath.Base(unit), func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, unit))
			if err != nil {
				t.Fatal(err)
			}
			if start := execStart(t, b); start != debBinary {
				t.Errorf("ExecStart runs %s, want %s", start, debBinary)
			}
			// A mount namespace of its own would hide the system mount
			// from every session.
			for _, ns := range []string{"ProtectSystem=", "ProtectHome=", "PrivateTmp=", "PrivateMounts=", "ReadWritePaths=", "ProtectKernelTunables=", "TemporaryFileSystem="} {
				if bytes.Contains(b, []byte("\n"+ns)) {
					t.Errorf("%s sets %s, which gives the broker a mount namespace of its own", unit, ns)
				}
			}
		})
	}
	for _, c := range []struct{ path, want string }{
		{debBash, "complete "},
		{debZsh, "#compdef oauthfs\n"},
		{debFish, "complete -c oauthfs"},
	} {
		b, err := os.ReadFile(filepath.Join(dir, c.path))
		if err != nil || !bytes.Contains(b, []byte(c.want)) {
			t.Errorf("%s: %v; want a completion script with %q", c.path, err, c.want)
		}
	}
	if out, err := exec.Command("bash", "-c", "source "+filepath.Join(dir, debBash)+" && complete -p oauthfs").CombinedOutput(); err != nil {
		t.Errorf("bash completion: %v\n%s", err, out)
	}
}

// execStart returns the program of a unit's ExecStart=.
func execStart(t *testing.T, unit []byte) string {
	t.Helper()
	for _, c := range execLines(unit) {
		if c.key == "ExecStart" {
			return c.program
		}
	}
	t.Fatalf("no ExecStart in\n%s", unit)
	return ""
}

type execLine struct{ key, program string }

// execLines returns the program of each Exec*= line of a unit, without
// systemd's prefixes (-, @, +, !, :).
func execLines(unit []byte) []execLine {
	var out []execLine
	for _, m := range regexp.MustCompile(`(?m)^(Exec[A-Za-z]+)=[-@+!:]*(\S+)`).FindAllSubmatch(unit, -1) {
		out = append(out, execLine{string(m[1]), string(m[2])})
	}
	return out
}

// checkDebInstall installs the package with dpkg -i, as root on CI, and
// takes it through a reinstall, remove, install and purge, checking what
// each leaves where. It refuses to run where an oauthfs is installed or
// configured already, so that it never touches a real installation, and
// purges the package when it ends, however it ends.
func checkDebInstall(t *testing.T, deb string) {
	_, err := exec.LookPath("dpkg")
	requireE2E(t, err == nil && os.Geteuid() == 0, "root and dpkg (to install the Debian package)")
	requireE2E(t, debStatus("fuse3") == "install ok installed", "the fuse3 package (the Debian package's dependency)")
	if s := debStatus("oauthfs"); s != "" && !strings.HasSuffix(s, " not-installed") {
		t.Fatalf("dpkg knows an oauthfs package already (%s); this test must not replace it: run it on a clean machine", s)
	}
	for _, p := range []string{debBinary, debEtc, debState, debLogs} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists: this machine has an oauthfs of its own, which this test must not touch; run it on a clean machine", p)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("dpkg", "--purge", "oauthfs").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, out)
		}
		// None of these was there before the test: whatever is left in
		// them now (a planted store file, say) is the test's.
		for _, p := range []string{debEtc, debState, debLogs} {
			os.RemoveAll(p)
		}
	})

	var key []byte // the key the broker's store made
	var edited []byte
	userStore := filepath.Join(debState, "1000", "00000000-0000-0000-0000-000000000000.cred")
	steps := []struct {
		name string
		f    func(t *testing.T)
	}{
		{"first install", func(t *testing.T) {
			if out := run(t, "dpkg", "-i", deb); !strings.Contains(out, "edit "+debConfig) {
				t.Errorf("dpkg -i says nothing of %s:\n%s", debConfig, out)
			}
			if s := debStatus("oauthfs"); s != "install ok installed" {
				t.Errorf("status %q after dpkg -i", s)
			}
			for _, f := range debFiles {
				checkOwnerMode(t, f.path, f.mode)
			}
			checkOwnerMode(t, debConfig, 0o600)
			checkOwnerMode(t, debState, os.ModeDir|0o700)
			checkOwnerMode(t, debLogs, os.ModeDir|0o700)
			// The key is the broker's to make, on its first start.
			if _, err := os.Lstat(debKey); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the install made %s (%v); the broker makes it", debKey, err)
			}
			if out := run(t, "dpkg", "--verify", "oauthfs"); out != "" {
				t.Errorf("dpkg --verify oauthfs:\n%s", out)
			}
		}},
		{"version", func(t *testing.T) {
			if out := run(t, debBinary, "version"); !strings.HasPrefix(out, "oauthfs ") {
				t.Errorf("oauthfs version = %q", out)
			}
			// docker finds the credential helper by its name.
			if out := run(t, "/usr/bin/docker-credential-oauthfs", "version"); !strings.HasPrefix(out, "oauthfs ") {
				t.Errorf("docker-credential-oauthfs version = %q", out)
			}
		}},
		{"units", func(t *testing.T) {
			for _, unit := range []string{debBroker, debMount} {
				b, err := os.ReadFile(unit)
				if err != nil {
					t.Fatal(err)
				}
				start := execStart(t, b)
				if out := run(t, start, "version"); !strings.HasPrefix(out, "oauthfs ") {
					t.Errorf("%s: %s version = %q", unit, start, out)
				}
				// Every program a unit runs is there: the binary, mkdir,
				// kill, and fuse3's fusermount3.
				for _, c := range execLines(b) {
					st, err := os.Stat(c.program)
					if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
						t.Errorf("%s: %s=%s is not an executable: %v", unit, c.key, c.program, err)
					}
				}
			}
		}},
		{"completion", func(t *testing.T) {
			if out, err := exec.Command("bash", "-c", "source "+debBash+" && complete -p oauthfs").CombinedOutput(); err != nil || !strings.Contains(string(out), "oauthfs") {
				t.Errorf("bash completion: %v\n%s", err, out)
			}
		}},
		{"broker store", func(t *testing.T) {
			// What the broker does first: load the shipped config and open
			// its store, which makes the key in the package's state
			// directory (refusing one open to others). The config names
			// secret files the administrator writes; these stand in for
			// them while it is loaded.
			text, err := os.ReadFile(debConfig)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range regexp.MustCompile(`(?m)^client_secret_file = "([^"]+)"`).FindAllSubmatch(text, -1) {
				secret := string(m[1])
				if err := os.WriteFile(secret, []byte("secret\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(secret)
			}
			cfg, err := config.Load(debConfig)
			if err != nil {
				t.Fatal(err)
			}
			if *cfg.Settings.StateDir != debState || cfg.Settings.KeyFile != debKey {
				t.Fatalf("config.toml: state_dir %s, key_file %s; want %s, %s", *cfg.Settings.StateDir, cfg.Settings.KeyFile, debState, debKey)
			}
			if cfg.Settings.Mount != "/oauth" {
				t.Errorf("config.toml: mount = %q; want the system mount at /oauth", cfg.Settings.Mount)
			}
			if _, err := store.OpenFile(*cfg.Settings.StateDir, cfg.Settings.KeyFile); err != nil {
				t.Fatal(err)
			}
			checkOwnerMode(t, debKey, 0o600)
			if key, err = os.ReadFile(debKey); err != nil || !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(key) {
				t.Fatalf("key file: %v, %d bytes; want 64 hex digits and a newline", err, len(key))
			}
		}},
		{"reinstall keeps key and config", func(t *testing.T) {
			cfg, err := os.ReadFile(debConfig)
			if err != nil {
				t.Fatal(err)
			}
			edited = append(cfg, "# edited by the administrator\n"...)
			if err := os.WriteFile(debConfig, edited, 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, "dpkg", "-i", "--force-confold", deb)
			checkBytes(t, debKey, key)
			checkBytes(t, debConfig, edited)
			checkOwnerMode(t, debState, os.ModeDir|0o700)
		}},
		{"remove keeps config and credentials", func(t *testing.T) {
			if err := os.MkdirAll(filepath.Dir(userStore), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(userStore, []byte("sealed"), 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, "dpkg", "--remove", "oauthfs")
			if s := debStatus("oauthfs"); s != "deinstall ok config-files" {
				t.Errorf("status %q after dpkg --remove", s)
			}
			for _, f := range debFiles {
				if _, err := os.Lstat(f.path); err == nil {
					t.Errorf("%s is left after dpkg --remove", f.path)
				}
			}
			checkBytes(t, debConfig, edited)
			checkBytes(t, debKey, key)
			checkBytes(t, userStore, []byte("sealed"))
		}},
		{"install after remove carries on", func(t *testing.T) {
			run(t, "dpkg", "-i", "--force-confold", deb)
			checkBytes(t, debConfig, edited)
			checkBytes(t, debKey, key)
			checkBytes(t, userStore, []byte("sealed"))
		}},
		{"purge leaves nothing", func(t *testing.T) {
			run(t, "dpkg", "--purge", "oauthfs")
			if s := debStatus("oauthfs"); s != "" && !strings.HasSuffix(s, " not-installed") {
				t.Errorf("status %q after dpkg --purge", s)
			}
			for _, p := range []string{debBinary, debBroker, debMount, debBash, debZsh, debFish, debDoc, debEtc, debState, debLogs} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s is left after dpkg --purge", p)
				}
			}
		}},
		{"first install keeps a restored key", func(t *testing.T) {
			// A state directory restored from a backup, too open, with its
			// key: the install makes it private and leaves the key alone.
			restored := []byte(strings.Repeat("5a", 32) + "\n")
			if err := os.Mkdir(debState, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(debState, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(debKey, restored, 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, "dpkg", "-i", deb)
			checkOwnerMode(t, debState, os.ModeDir|0o700)
			checkBytes(t, debKey, restored)
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			return // each step builds on the one before
		}
	}
}

// checkOwnerMode checks that path belongs to root with mode.
func checkOwnerMode(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if st.Mode() != mode {
		t.Errorf("%s has mode %v, want %v", path, st.Mode(), mode)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && (sys.Uid != 0 || sys.Gid != 0) {
		t.Errorf("%s belongs to %d:%d, want root", path, sys.Uid, sys.Gid)
	}
}

// checkBytes checks that the file at path holds want.
func checkBytes(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed: %d bytes, want the %d it had", path, len(got), len(want))
	}
}
