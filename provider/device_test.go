package provider

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

// deviceClient is a Client for the device sign-in of p, with auth_style.
func deviceClient(t *testing.T, p *localprovider.Provider, style, deviceURL string) *Client {
	t.Helper()
	text := fmt.Sprintf("[[integration]]\nname = \"Dev\"\nclient_id = %q\nclient_secret = %q\nauth_url = \"%s/authorize\"\ntoken_url = \"%s/token\"\nauth_style = %q\n",
		p.ClientID, p.ClientSecret, p.URL, p.URL, style)
	if deviceURL != "" {
		text += fmt.Sprintf("device_auth_url = %q\n", deviceURL)
	}
	cfg, err := config.Parse("c.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg.Integrations[0], Options{Callback: "http://127.0.0.1:1/callback", Timeout: 5 * time.Second, HTTP: NewHTTPClient(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDevice runs device sign-ins (RFC 8628) against the local provider:
// approved with either client authentication, denied, expired, and
// slowed down.
func TestDevice(t *testing.T) {
	for _, tc := range []struct {
		name     string
		style    string
		decide   func(p *localprovider.Provider)
		life     time.Duration
		slowDown int
		drop     int
		wantCode string // "" for success
	}{
		{"approved (basic)", config.AuthStyleBasic, func(p *localprovider.Provider) { p.DeviceDecide(true) }, time.Minute, 0, 0, ""},
		{"approved (post)", config.AuthStylePost, func(p *localprovider.Provider) { p.DeviceDecide(true) }, time.Minute, 0, 0, ""},
		{"denied", config.AuthStyleBasic, func(p *localprovider.Provider) { p.DeviceDecide(false) }, time.Minute, 0, 0, "access_denied"},
		{"expired", config.AuthStyleBasic, func(*localprovider.Provider) {}, 2 * time.Second, 0, 0, "expired_token"},
		{"slowed down", config.AuthStyleBasic, func(p *localprovider.Provider) { p.DeviceDecide(true) }, time.Minute, 1, 0, ""},
		{"connection dropped", config.AuthStyleBasic, func(p *localprovider.Provider) { p.DeviceDecide(true) }, time.Minute, 0, 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := localprovider.New()
			defer p.Close()
			p.SetDevice(time.Second, tc.life)
			p.SlowDown(tc.slowDown)
			p.DropPolls(tc.drop)
			c := deviceClient(t, p, tc.style, p.URL+"/device/code")
			d, err := c.StartDevice(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if d.UserCode == "" || d.VerificationURI != p.URL+"/device" || d.VerificationURIComplete != p.URL+"/device?user_code="+d.UserCode {
				t.Fatalf("device = %+v", d)
			}
			time.AfterFunc(1500*time.Millisecond, func() { tc.decide(p) })
			a, err := c.PollDevice(context.Background(), d)
			if tc.wantCode != "" {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != tc.wantCode {
					t.Fatalf("PollDevice = %v; want %s", err, tc.wantCode)
				}
				return
			}
			if err != nil || !p.Issued(string(a.Access)) || a.Refresh == nil {
				t.Fatalf("PollDevice = %v; want tokens", err)
			}
			polls := p.DevicePolls()
			if tc.drop > 0 {
				// After a failed request, polling backs off.
				if len(polls) < 2 || polls[1].Sub(polls[0]) < 5900*time.Millisecond {
					t.Errorf("polls %v; want a longer interval after a failed request", polls)
				}
			} else if tc.slowDown > 0 {
				if len(polls) < 2 || polls[1].Sub(polls[0]) < 5900*time.Millisecond {
					t.Errorf("polls %v; want the interval 5 s longer after slow_down", polls)
				}
			} else if len(polls) < 2 || polls[1].Sub(polls[0]) < 900*time.Millisecond {
				t.Errorf("polls %v; want one a second", polls)
			}
		})
	}
}

func TestDeviceNeedsAnEndpoint(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	c := deviceClient(t, p, config.AuthStyleBasic, "")
	if _, err := c.StartDevice(context.Background()); !errors.Is(err, ErrNoDeviceAuth) {
		t.Errorf("StartDevice without device_auth_url = %v; want ErrNoDeviceAuth", err)
	}
	bad := deviceClient(t, p, config.AuthStyleBasic, p.URL+"/device/code")
	bad.cfg.ClientID = "someone-else"
	if _, err := bad.StartDevice(context.Background()); err == nil {
		t.Errorf("StartDevice with bad client credentials succeeded")
	}
}

// TestWebURL: only a plain http(s) URL is shown as a verification page.
func TestWebURL(t *testing.T) {
	for s, want := range map[string]bool{
		"https://github.com/login/device":                      true,
		"http://127.0.0.1:8080/device?user_code=AB-CD":         true,
		"https://github.com@evil.example/":                     false,
		"https://github.com/login/device   (then run curl|sh)": false,
		"https://a.example/\nmore":                             false,
		"javascript:alert(1)":                                  false,
		"/relative":                                            false,
		"":                                                     false,
	} {
		if got := webURL(s); got != want {
			t.Errorf("webURL(%q) = %v; want %v", s, got, want)
		}
	}
}
