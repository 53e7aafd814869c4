package localprovider

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"strings"
	"time"
)

// deviceGrant is one device sign-in (RFC 8628) in progress.
type deviceGrant struct {
	user    string // the user code
	expires time.Time
	state   string // "pending", "approved" or "denied"
	polls   []time.Time
}

// deviceCode answers the device authorization request: it checks the
// client's credentials (Basic or in the form) and issues a device code
// and a user code.
func (p *Provider) deviceCode(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		oauthError(w, 400, "invalid_request", "want a POST form")
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != p.ClientID || secret != p.ClientSecret {
		oauthError(w, 401, "invalid_client", "bad client credentials")
		return
	}
	p.mu.Lock()
	dc, uc := "dc-"+random(), strings.ToUpper(random()[:4]+"-"+random()[:4])
	g := &deviceGrant{user: uc, expires: time.Now().Add(p.deviceLife), state: "pending"}
	p.devices[dc] = g
	interval, life := p.deviceInterval, p.deviceLife
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"device_code": dc, "user_code": uc,
		"verification_uri":          p.URL + "/device",
		"verification_uri_complete": p.URL + "/device?user_code=" + uc,
		"expires_in":                int(life / time.Second), "interval": int(interval / time.Second),
	})
}

// devicePage is the verification page: a form to approve or deny the
// sign-in of a user code.
func (p *Provider) devicePage(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		r.ParseForm()
		p.mu.Lock()
		found := false
		for _, g := range p.devices {
			if g.user == r.PostForm.Get("user_code") && g.state == "pending" {
				g.state = map[bool]string{true: "approved", false: "denied"}[r.PostForm.Get("action") == "approve"]
				found = true
			}
		}
		p.mu.Unlock()
		if !found {
			http.Error(w, "unknown or used code", http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "<!doctype html><title>Done</title><h1>Done: you can close this window.</h1>")
		return
	}
	uc := html.EscapeString(r.URL.Query().Get("user_code"))
	fmt.Fprintf(w, `<!doctype html><title>Device sign-in</title><h1>Sign in a device</h1>
<form method="post" action="/device"><label>Code <input name="user_code" value="%s"></label>
<button name="action" value="approve">Approve</button> <button name="action" value="deny">Deny</button></form>`, uc)
}

// deviceToken answers the token request of the device_code grant.
func (p *Provider) deviceToken(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	g := p.devices[r.PostForm.Get("device_code")]
	if g == nil {
		p.mu.Unlock()
		oauthError(w, 400, "invalid_grant", "unknown device code")
		return
	}
	g.polls = append(g.polls, time.Now())
	if p.drops > 0 {
		p.drops--
		p.mu.Unlock()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close() // no answer at all
		}
		return
	}
	switch {
	case p.slowDowns > 0:
		p.slowDowns--
		p.mu.Unlock()
		oauthError(w, 400, "slow_down", "polling too quickly")
	case time.Now().After(g.expires):
		p.mu.Unlock()
		oauthError(w, 400, "expired_token", "the device code expired")
	case g.state == "denied":
		p.mu.Unlock()
		oauthError(w, 400, "access_denied", "the user denied the sign-in")
	case g.state == "pending":
		p.mu.Unlock()
		oauthError(w, 400, "authorization_pending", "waiting for the user")
	default:
		g.state = "used"
		a, rt := p.newPairLocked()
		life := p.lifetime
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": a, "refresh_token": rt, "token_type": "Bearer",
			"expires_in": int(life / time.Second), "scope": "read write"})
	}
}

// SetDevice sets the interval a device authorization answer asks for and
// how long its codes last.
func (p *Provider) SetDevice(interval, life time.Duration) {
	p.mu.Lock()
	p.deviceInterval, p.deviceLife = interval, life
	p.mu.Unlock()
}

// SlowDown makes the next n device token requests answer slow_down.
func (p *Provider) SlowDown(n int) { p.mu.Lock(); p.slowDowns = n; p.mu.Unlock() }

// DropPolls makes the next n device token requests go unanswered: the
// connection closes.
func (p *Provider) DropPolls(n int) { p.mu.Lock(); p.drops = n; p.mu.Unlock() }

// DeviceDecide approves or denies every pending device sign-in.
func (p *Provider) DeviceDecide(approve bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range p.devices {
		if g.state == "pending" {
			g.state = map[bool]string{true: "approved", false: "denied"}[approve]
		}
	}
}

// DevicePolls returns when each device token request came, for every
// device code.
func (p *Provider) DevicePolls() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Time
	for _, g := range p.devices {
		out = append(out, g.polls...)
	}
	return out
}

// DeviceCodes returns how many device codes it has issued.
func (p *Provider) DeviceCodes() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.devices) }
