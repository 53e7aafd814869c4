package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

const good = `
[broker]
socket = "/tmp/x/broker.sock"
refresh_margin = "2m"
request_timeout = "3s"
state_dir = ""

[[integration]]
name = "GitHub"
client_id = "id"
client_secret = "s"
provider = "github"
scopes = ["repo", "read:user"]

[[integration]]
name = "Local"
guid = "a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d"
client_id = "id"
client_secret_env = "OAUTHFS_TEST_SECRET"
auth_url = "http://127.0.0.1:9/authorize"
token_url = "http://localhost:9/token"
auth_params = { access_type = "offline", prompt = "consent" }
`

func TestParseGood(t *testing.T) {
	c, err := Parse("/etc/oauthfs/config.toml", []byte(good))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	if c.Settings.RefreshMargin != 2*time.Minute || c.Settings.RequestTimeout != 3*time.Second {
		t.Errorf("durations = %v, %v; want 2m, 3s", c.Settings.RefreshMargin, c.Settings.RequestTimeout)
	}
	if !c.Settings.MemoryOnly() {
		t.Errorf("MemoryOnly() = false; want true for state_dir = \"\"")
	}
	gh := c.Integrations[0]
	if gh.AuthURL != "https://github.com/login/oauth/authorize" || gh.TokenURL != "https://github.com/login/oauth/access_token" {
		t.Errorf("provider github endpoints = %q %q", gh.AuthURL, gh.TokenURL)
	}
	if want := uuid.NewSHA1(guidNamespace, []byte("GitHub")); gh.GUID != want || gh.GUID.Version() != 5 {
		t.Errorf("default guid = %v; want UUIDv5 %v", gh.GUID, want)
	}
	if gh.Line != 8 || c.Integrations[1].Line != 15 {
		t.Errorf("header lines = %d, %d; want 8, 15", gh.Line, c.Integrations[1].Line)
	}
	if gh.DisplayName != "GitHub" {
		t.Errorf("DisplayName = %q; want the name", gh.DisplayName)
	}
	if got := c.Integrations[1].AuthParams["prompt"]; got != "consent" {
		t.Errorf("auth_params prompt = %q", got)
	}
	// The default guid is stable across parses (and so across restarts).
	c2, _ := Parse("x.toml", []byte(good))
	if c2.Integrations[0].GUID != gh.GUID {
		t.Errorf("guid changed between parses")
	}
}

func TestDefaults(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	t.Setenv("XDG_STATE_HOME", "/home/u/.state")
	c, err := Parse("c.toml", []byte("[broker]\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Settings
	if b.Socket != "/run/user/1000/oauthfs/broker.sock" || *b.StateDir != "/home/u/.state/oauthfs" ||
		b.KeyFile != "/home/u/.state/oauthfs/key" || b.RefreshMargin != DefaultRefreshMargin ||
		b.RequestTimeout != DefaultRequestTimeout || b.CallbackURL != "http://127.0.0.1:8400/callback" {
		t.Errorf("defaults = %+v", b)
	}
}

func TestSecretSources(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "s")
	os.WriteFile(f, []byte("from-file\n"), 0o600)
	t.Setenv("OAUTHFS_TEST_SECRET", "from-env")
	for _, tc := range []struct {
		name, key, val, want string
	}{
		{"literal", "client_secret", "lit", "lit"},
		{"file", "client_secret_file", f, "from-file"},
		{"env", "client_secret_env", "OAUTHFS_TEST_SECRET", "from-env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := `[[integration]]
name = "x"
client_id = "i"
provider = "google"
` + tc.key + ` = "` + tc.val + `"`
			c, err := Parse(filepath.Join(dir, "c.toml"), []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			s, err := c.Integrations[0].Secret()
			if err != nil || string(s) != tc.want {
				t.Errorf("Secret() = %q, %v; want %q", s, err, tc.want)
			}
		})
	}
}

func TestSecretFileReadableByOthersWarns(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "s")
	os.WriteFile(f, []byte("x"), 0o644)
	os.Chmod(f, 0o644)
	c, err := Parse(filepath.Join(dir, "c.toml"), []byte("[[integration]]\nname=\"x\"\nclient_id=\"i\"\nprovider=\"github\"\nclient_secret_file=\"s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "chmod 600") {
		t.Errorf("Warnings = %q; want one chmod hint", c.Warnings)
	}
}

func TestInvalid(t *testing.T) {
	base := func(extra string) string {
		return "[[integration]]\nname = \"A\"\nclient_id = \"i\"\nclient_secret = \"s\"\n" + extra
	}
	long := strings.Repeat("n", 256)
	for _, tc := range []struct {
		name string
		src  string
		want string // substring of the error, which must also name the file
	}{
		{"syntax", "[broker]\nsocket = \n", "c.toml:2:"},
		{"unknown broker key", "[broker]\nsockett = \"x\"\n", `c.toml:2: unknown key "broker.sockett"`},
		{"unknown integration key", base("provider = \"github\"\nclient_secrett = \"x\"\n"), `c.toml:6: unknown key "integration.client_secrett"`},
		{"unknown table", "[brokerr]\nx = 1\n", `unknown key "brokerr`},
		{"bad margin", "[broker]\nrefresh_margin = \"5 minutes\"\n", "refresh_margin"},
		{"relative mount", "[broker]\nmount = \"oauth\"\n", `[broker] mount "oauth": want an absolute`},
		{"mount at the root", "[broker]\nmount = \"/\"\n", `[broker] mount "/": want an absolute`},
		{"unclean mount", "[broker]\nmount = \"/oauth/\"\n", `[broker] mount "/oauth/": want an absolute`},
		{"negative timeout", "[broker]\nrequest_timeout = \"-1s\"\n", "must be positive"},
		{"zero margin", "[broker]\nrefresh_margin = \"0s\"\n", "must be positive"},
		{"margin without a unit", "[broker]\nrefresh_margin = 300\n", "a string with a unit"},
		{"no name", "[[integration]]\nclient_id = \"i\"\nclient_secret = \"s\"\nprovider = \"github\"\n", "c.toml:1: integration #1: name is missing"},
		{"long name", "[[integration]]\nname = \"" + long + "\"\nclient_id = \"i\"\nclient_secret = \"s\"\nprovider = \"github\"\n", "256 bytes"},
		{"slash", base("provider = \"github\"\n") + "[[integration]]\nname = \"a/b\"\n", `integration "a/b": name must not contain`},
		{"dot", "[[integration]]\nname = \".\"\n", `must not be "."`},
		{"dotdot", "[[integration]]\nname = \"..\"\n", `must not be ".."`},
		{"nul", "[[integration]]\nname = \"a\\u0000b\"\n", "must not contain"},
		{"duplicate name", base("provider = \"github\"\n") + base("provider = \"github\"\n"), "c.toml:6: integration \"A\": name is also used by integration #1"},
		{"duplicate guid", base("provider = \"github\"\nguid = \"a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d\"\n") +
			"[[integration]]\nname = \"B\"\nclient_id = \"i\"\nclient_secret = \"s\"\nprovider = \"github\"\nguid = \"a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d\"\n", "guid a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d is also used"},
		{"bad guid", base("provider = \"github\"\nguid = \"nope\"\n"), `guid "nope" is not a UUID`},
		{"nil guid", base("provider = \"github\"\nguid = \"00000000-0000-0000-0000-000000000000\"\n"), "nil UUID"},
		{"no client id", "[[integration]]\nname = \"A\"\nclient_secret = \"s\"\nprovider = \"github\"\n", "client_id is missing"},
		{"unknown provider", base("provider = \"nope\"\n"), `unknown provider "nope"`},
		{"no endpoints", base(""), "auth_url is missing"},
		{"no token url", base("auth_url = \"https://a.example/x\"\n"), "token_url is missing"},
		{"relative url", base("auth_url = \"/authorize\"\ntoken_url = \"https://a.example/t\"\n"), "not an absolute URL"},
		{"plain http remote", base("auth_url = \"http://example.com/a\"\ntoken_url = \"https://a.example/t\"\n"), "uses plain http"},
		{"ftp", base("auth_url = \"ftp://example.com/a\"\ntoken_url = \"https://a.example/t\"\n"), "scheme must be https"},
		{"bad revocation", base("provider = \"github\"\nrevocation_url = \"http://example.com/r\"\n"), "revocation_url"},
		{"no secret", "[[integration]]\nname = \"A\"\nclient_id = \"i\"\nprovider = \"github\"\n", "exactly one of client_secret, client_secret_file, client_secret_env (found 0)"},
		{"two secrets", base("provider = \"github\"\nclient_secret_env = \"X\"\n"), "(found 2)"},
		{"missing secret file", "[[integration]]\nname = \"A\"\nclient_id = \"i\"\nprovider = \"github\"\nclient_secret_file = \"/nonexistent/secret\"\n", "no such file"},
		{"secret file is dir", "[[integration]]\nname = \"A\"\nclient_id = \"i\"\nprovider = \"github\"\nclient_secret_file = \"/\"\n", "not a regular file"},
		{"bad scope", base("provider = \"github\"\nscopes = [\"a b\"]\n"), "single non-empty word"},
		{"bad callback", "[broker]\ncallback_url = \"http://example.com/cb\"\n", "callback_url"},
		{"bad listen", "[broker]\nlisten = \"8400\"\n", "want host:port"},
		{"callback on /start", "[broker]\ncallback_url = \"http://127.0.0.1:8400/start\"\n", "uses the path /start, which the sign-in web server serves itself"},
		{"callback without a path", "[broker]\ncallback_url = \"http://127.0.0.1:8400\"\n", "has no path"},
		{"name shaped like a guid", "[[integration]]\nname = \"A3C4F5D6-B8E9-4A1B-9C2D-3E4F5A6B7C8D\"\nclient_id = \"i\"\nclient_secret = \"s\"\nprovider = \"github\"\n", "has the shape of a guid"},
		{"name shaped like a bare guid", "[[integration]]\nname = \"a3c4f5d6b8e94a1b9c2d3e4f5a6b7c8d\"\nclient_id = \"i\"\nclient_secret = \"s\"\nprovider = \"github\"\n", "has the shape of a guid"},
		{"bad auth style", base("provider = \"github\"\nauth_style = \"header\"\n"), `auth_style "header": want "basic"`},
		{"bad userinfo", base("provider = \"github\"\nuserinfo_url = \"http://example.com/u\"\n"), "userinfo_url"},
		{"bad device url", base("provider = \"github\"\ndevice_auth_url = \"http://example.com/d\"\n"), "device_auth_url"},
		{"callback on /settings", "[broker]\ncallback_url = \"http://127.0.0.1:8400/settings/cb\"\n", "uses the path /settings"},
		{"Entra: two resources", base("provider = \"microsoft\"\nscopes = [\"https://graph.microsoft.com/.default\", \"api://x/.default\"]\n"), "Microsoft Entra grants a token for one resource at a time"},
		{"assumed lifetime in nanoseconds", base("provider = \"github\"\nassumed_lifetime = 7200\n"), "assumed_lifetime"},
		{"callback under a prefix", "[broker]\ncallback_url = \"https://build-3.example.com/oauthfs/callback\"\n", "needs a host name of its own"},
		{"wrong type", "[broker]\nsocket = 5\n", "c.toml"},
		{"issuer over plain http", base("issuer = \"http://idp.example\"\n"), "issuer: \"http://idp.example\" uses plain http"},
		{"issuer with a query", base("issuer = \"https://idp.example/?tenant=a\"\n"), "has a query or a fragment"},
		{"issuer with a fragment", base("issuer = \"https://idp.example/#a\"\n"), "has a query or a fragment"},
		{"issuer not a url", base("issuer = \"idp.example\"\n"), "issuer: \"idp.example\" is not an absolute URL"},
		{"no endpoints, no issuer", base(""), "(set it, or set issuer or provider)"},
		{"variant named ..", base("provider = \"github\"\n[[integration.token]]\nname = \"..\"\nscopes = [\"a\"]\n"), "it names a directory"},
		{"variant with a slash", base("provider = \"github\"\n[[integration.token]]\nname = \"a/b\"\nscopes = [\"a\"]\n"), "it names a directory"},
		{"variant twice", base("provider = \"github\"\n[[integration.token]]\nname = \"g\"\nscopes = [\"a\"]\n[[integration.token]]\nname = \"g\"\nscopes = [\"b\"]\n"), "is used twice"},
		{"variant of nothing", base("provider = \"github\"\n[[integration.token]]\nname = \"g\"\n"), "set resource, scopes or both"},
		{"variant resource not a URI", base("provider = \"github\"\n[[integration.token]]\nname = \"g\"\nresource = \"graph\"\n"), "want an absolute URI"},
		{"resources not a URI", base("provider = \"github\"\nresources = [\"graph\"]\n"), "resources: resource \"graph\": want an absolute URI"},
		{"variant unknown key", base("provider = \"github\"\n[[integration.token]]\nname = \"g\"\naudience = \"x\"\n"), "audience"},
		{"docker registry with a scheme", base("provider = \"github\"\ndocker_registries = [\"https://ghcr.io\"]\n"), "want a registry host name"},
		{"docker registry twice", base("provider = \"github\"\ndocker_registries = [\"ghcr.io\"]\n") + "[[integration]]\nname = \"B\"\nclient_id = \"i\"\nclient_secret = \"s\"\nprovider = \"github\"\ndocker_registries = [\"GHCR.io\"]\n", "is also named by integration #1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/etc/c.toml", []byte(tc.src))
			if err == nil {
				t.Fatalf("Parse(%q) = nil; want error containing %q", tc.src, tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) = %v; want errors.Is ErrInvalid", tc.src, err)
			}
			if !strings.Contains(err.Error(), "/etc/c.toml") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse(%q) = %q; want the file name and %q", tc.src, err, tc.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("/nonexistent/oauthfs.toml")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/oauthfs.toml") {
		t.Errorf("Load = %v; want an error naming the file", err)
	}
}

// TestDeviceAuthURL: presets fill device_auth_url where x/oauth2 has one,
// and a configured one wins.
func TestDeviceAuthURL(t *testing.T) {
	for _, tc := range []struct {
		name, extra, want string
	}{
		{"github", `provider = "github"`, "https://github.com/login/device/code"},
		{"google", `provider = "google"`, "https://oauth2.googleapis.com/device/code"},
		{"microsoft", `provider = "microsoft"`, "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode"},
		{"gitlab", `provider = "gitlab"`, "https://gitlab.com/oauth/authorize_device"},
		{"configured", `provider = "github"` + "\n" + `device_auth_url = "https://ghe.example/device"`, "https://ghe.example/device"},
		{"custom without one", `auth_url = "https://a.example/a"` + "\n" + `token_url = "https://a.example/t"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("c.toml", []byte("[[integration]]\nname = \"A\"\nclient_id = \"i\"\nclient_secret = \"s\"\n"+tc.extra+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Integrations[0].DeviceAuthURL; got != tc.want {
				t.Errorf("device_auth_url = %q; want %q", got, tc.want)
			}
		})
	}
}

// TestIssuer: an issuer alone is a complete integration (its metadata
// gives the endpoints, in package provider), and endpoints set beside it
// are kept as they are.
func TestIssuer(t *testing.T) {
	for _, tc := range []struct {
		name, extra         string
		issuer, auth, token string
	}{
		{"issuer alone", `issuer = "https://idp.example"`, "https://idp.example", "", ""},
		{"issuer with a path", `issuer = "https://idp.example/realms/a"`, "https://idp.example/realms/a", "", ""},
		{"loopback issuer", `issuer = "http://127.0.0.1:9"`, "http://127.0.0.1:9", "", ""},
		{"issuer and endpoints", "issuer = \"https://idp.example\"\nauth_url = \"https://idp.example/a\"\ntoken_url = \"https://idp.example/t\"",
			"https://idp.example", "https://idp.example/a", "https://idp.example/t"},
		{"issuer and a preset", "issuer = \"https://accounts.google.com\"\nprovider = \"google\"",
			"https://accounts.google.com", "https://accounts.google.com/o/oauth2/auth", "https://oauth2.googleapis.com/token"},
		{"no issuer", "auth_url = \"https://a.example/a\"\ntoken_url = \"https://a.example/t\"", "", "https://a.example/a", "https://a.example/t"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "[[integration]]\nname = \"A\"\nclient_id = \"i\"\nclient_secret = \"s\"\n" + tc.extra + "\n"
			c, err := Parse("c.toml", []byte(src))
			if err != nil {
				t.Fatalf("Parse(%q) = %v; want no error", src, err)
			}
			in := c.Integrations[0]
			if in.Issuer != tc.issuer || in.AuthURL != tc.auth || in.TokenURL != tc.token {
				t.Errorf("Parse(%q) = issuer %q, auth_url %q, token_url %q; want %q, %q, %q", src, in.Issuer, in.AuthURL, in.TokenURL, tc.issuer, tc.auth, tc.token)
			}
		})
	}
}

// TestSampleConfig keeps deploy/config.toml valid.
func TestSampleConfig(t *testing.T) {
	raw, err := os.ReadFile("../deploy/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	text := string(raw)
	for _, s := range []string{"github", "google", "microsoft"} {
		f := filepath.Join(dir, s+".secret")
		os.WriteFile(f, []byte("x"), 0o600)
		text = strings.ReplaceAll(text, "/etc/oauthfs/"+s+".secret", f)
	}
	c, err := Parse("deploy/config.toml", []byte(text))
	if err != nil {
		t.Fatalf("the sample config: %v", err)
	}
	if len(c.Integrations) != 3 || len(c.Warnings) != 0 || c.Settings.SocketFor(true) != SystemSocket {
		t.Errorf("sample config = %d integrations, warnings %q", len(c.Integrations), c.Warnings)
	}
}

func TestAuthStyleDefaults(t *testing.T) {
	c, err := Parse("c.toml", []byte(`
[[integration]]
name = "Custom"
client_id = "i"
client_secret = "s"
auth_url = "https://a.example/authorize"
token_url = "https://a.example/token"
[[integration]]
name = "GitHub"
client_id = "i"
client_secret = "s"
provider = "github"
[[integration]]
name = "Chosen"
client_id = "i"
client_secret = "s"
provider = "github"
auth_style = "basic"
`))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{AuthStyleBasic, AuthStylePost, AuthStyleBasic} {
		if got := c.Integrations[i].AuthStyle; got != want {
			t.Errorf("%s: auth_style = %q; want %q", c.Integrations[i].Name, got, want)
		}
	}
	if got := c.Integrations[1].UserinfoURL; got != "https://api.github.com/user" {
		t.Errorf("github preset userinfo_url = %q", got)
	}
}

// TestStore: the [store] table.
func TestStore(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "dsn"), []byte("postgres://db.example/oauthfs\n"), 0o600)
	t.Setenv("OAUTHFS_TEST_DSN", "postgres://env.example/oauthfs")
	for _, tc := range []struct {
		name, text string
		backend    string // "" when an error is wanted
		dsn, err   string
	}{
		{"default", "", BackendFile, "", ""},
		{"postgres dsn", "[store]\nbackend = \"postgres\"\ndsn = \"postgres://h/db\"", BackendPostgres, "postgres://h/db", ""},
		{"postgres dsn_file (relative)", "[store]\nbackend = \"postgres\"\ndsn_file = \"dsn\"", BackendPostgres, "postgres://db.example/oauthfs", ""},
		{"postgres dsn_env", "[store]\nbackend = \"postgres\"\ndsn_env = \"OAUTHFS_TEST_DSN\"", BackendPostgres, "postgres://env.example/oauthfs", ""},
		{"two sources", "[store]\nbackend = \"postgres\"\ndsn = \"x\"\ndsn_env = \"Y\"", "", "", "exactly one of dsn"},
		{"no source", "[store]\nbackend = \"postgres\"", "", "", "exactly one of dsn"},
		{"dsn for files", "[store]\ndsn = \"x\"", "", "", "for backend = \"postgres\""},
		{"unknown backend", "[store]\nbackend = \"etcd\"", "", "", "want \"file\" or \"postgres\""},
		{"no key file", "[broker]\nstate_dir = \"\"\n[store]\nbackend = \"postgres\"\ndsn = \"x\"", "", "", "needs [broker] key_file"},
		{"missing dsn_file", "[store]\nbackend = \"postgres\"\ndsn_file = \"nope\"", "", "", "dsn_file"},
		{"cluster_url", "[broker]\ncluster_url = \"http://10.0.0.5:8400\"\n[store]\nbackend = \"postgres\"\ndsn = \"x\"", BackendPostgres, "x", ""},
		{"cluster_url with a path", "[broker]\ncluster_url = \"http://10.0.0.5:8400/x\"\n[store]\nbackend = \"postgres\"\ndsn = \"x\"", "", "", "want http(s)://HOST:PORT"},
		{"cluster_url on one host", "[broker]\ncluster_url = \"http://10.0.0.5:8400\"", "", "", "share [store] backend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(filepath.Join(dir, "c.toml"), []byte(tc.text))
			if tc.backend == "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid) {
					t.Errorf("Parse = %v; want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Store.Backend != tc.backend {
				t.Errorf("backend = %q; want %q", c.Store.Backend, tc.backend)
			}
			if dsn, err := c.Store.ReadDSN(); err != nil || dsn != tc.dsn {
				t.Errorf("ReadDSN = %q, %v; want %q", dsn, err, tc.dsn)
			}
		})
	}
}

// TestPresetQuirks: each preset sets what its provider needs beyond its
// endpoints, unless the configuration says otherwise.
func TestPresetQuirks(t *testing.T) {
	parse := func(t *testing.T, lines string) *Integration {
		t.Helper()
		c, err := Parse("c.toml", []byte("[[integration]]\nname = \"A\"\nclient_id = \"i\"\nclient_secret = \"s\"\n"+lines))
		if err != nil {
			t.Fatal(err)
		}
		return c.Integrations[0]
	}
	t.Run("google", func(t *testing.T) {
		in := parse(t, "provider = \"google\"\n")
		if in.AuthParams["access_type"] != "offline" || in.AuthParams["prompt"] != "consent" {
			t.Errorf("google auth_params = %v; want access_type=offline, prompt=consent", in.AuthParams)
		}
		if in := parse(t, "provider = \"google\"\nauth_params = { prompt = \"select_account\" }\n"); in.AuthParams["prompt"] != "select_account" || in.AuthParams["access_type"] != "offline" {
			t.Errorf("google with its own prompt = %v; want it kept, and access_type added", in.AuthParams)
		}
	})
	t.Run("microsoft", func(t *testing.T) {
		if in := parse(t, "provider = \"microsoft\"\nscopes = [\"User.Read\"]\n"); strings.Join(in.Scopes, " ") != "User.Read offline_access" {
			t.Errorf("microsoft scopes = %v; want offline_access added", in.Scopes)
		}
	})
	t.Run("github", func(t *testing.T) {
		if in := parse(t, "provider = \"github\"\n"); !in.RefreshRevokesAccess {
			t.Error("github: refresh_revokes_access is not set")
		}
		if in := parse(t, "provider = \"gitlab\"\n"); in.RefreshRevokesAccess {
			t.Error("gitlab: refresh_revokes_access is set")
		}
	})
}
