package signin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/credential"
)

// The Managed Credentials page (/settings): a user's integrations, their
// status, Sign in and Sign out, and each one's details. A browser gets a
// visit for one user only by opening a one-time link that the user
// asked the broker for over the session socket (oauthfs settings).
//
// A visit is two secrets, and every request must carry both: a key in
// the URL (/settings?s=KEY; the forms post to URLs that carry it too) and
// a cookie, whose name is the visit's own (see visitCookieName). The
// key appears only on pages whose URL holds it. The cookie alone is not enough because cookies do not tell
// ports apart: a browser sends it to a server another local user runs on
// any port of the same host. The key alone is not enough because URLs
// are copied and shown.
const (
	// settingsLinkLife is how long a one-time link works.
	settingsLinkLife = time.Minute
	// settingsLife is how long a visit lasts: a working day.
	settingsLife = 10 * time.Hour
	// Bounds on one user's unused links and visits, and everyone's.
	maxSettingsLinksPerUser  = 20
	maxSettingsVisitsPerUser = 32
	maxSettings              = 10000
	// settingsCookie begins the names of the visit cookies.
	settingsCookie = "oauthfs_settings_"
)

//go:embed assets
var assets embed.FS

var settingsTmpl = template.Must(template.New("settings.html").Funcs(template.FuncMap{
	"join": func(s []string) string { return strings.Join(s, " ") },
}).ParseFS(assets, "assets/settings.html"))

// settingsLink is a one-time link not used yet.
type settingsLink struct {
	uid     int
	expires time.Time
}

// settingsVisit is one browser's visit on the settings page. Its
// fields are guarded by Table.mu.
type settingsVisit struct {
	uid      int
	user     string
	key      string // in the page's URL; the key of Table.visits
	cookie   string // the value of the browser's settings cookie
	csrf     string
	expires  time.Time
	flash    string // what the last action did, shown once
	flashBad bool
}

// SettingsLink is a one-time link to the settings page.
type SettingsLink struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

// SettingsLink returns a one-time link to the settings page for user
// uid: it works once, within a minute, and gives the browser that opens
// it a visit for uid for a working day.
func (t *Table) SettingsLink(uid int) (*SettingsLink, error) {
	if t.callback == nil {
		return nil, fmt.Errorf("signin: the settings page needs [broker] callback_url: %w", credential.ErrSignIn)
	}
	now := t.k.Now()
	key := randomID(32)
	t.mu.Lock()
	t.pruneSettingsLocked(now)
	n := 0
	for _, l := range t.links {
		if l.uid == uid {
			n++
		}
	}
	if n >= maxSettingsLinksPerUser || len(t.links) >= maxSettings {
		t.mu.Unlock()
		return nil, fmt.Errorf("signin: uid %d has %d unused settings links; wait a minute: %w", uid, n, credential.ErrSignIn)
	}
	t.links[key] = &settingsLink{uid: uid, expires: now.Add(settingsLinkLife)}
	t.mu.Unlock()
	t.route(key, now.Add(settingsLinkLife))
	u := *t.callback
	u.Path, u.RawQuery = "/settings/open", url.Values{"key": {key}}.Encode()
	return &SettingsLink{URL: u.String(), Expires: now.Add(settingsLinkLife)}, nil
}

// EndSettings ends every settings visit and unused link of user uid,
// and returns how many visits it ended.
func (t *Table) EndSettings(uid int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, s := range t.visits {
		if s.uid == uid {
			delete(t.visits, k)
			s.expires = time.Time{} // a sign-in it started no longer returns to it
			n++
		}
	}
	for k, l := range t.links {
		if l.uid == uid {
			delete(t.links, k)
		}
	}
	if n > 0 {
		t.log.Info("settings visits ended", "uid", uid, "count", n)
		t.audit.Record(audit.Event{Event: "settings_session", User: userName(uid), UID: audit.UID(uid), Result: "ended", Reason: fmt.Sprintf("%d sessions ended everywhere", n)})
	}
	return n
}

// pruneSettingsLocked drops expired links and visits. Callers hold
// t.mu.
func (t *Table) pruneSettingsLocked(now time.Time) {
	for k, l := range t.links {
		if now.After(l.expires) {
			delete(t.links, k)
		}
	}
	for k, s := range t.visits {
		if now.After(s.expires) {
			delete(t.visits, k)
		}
	}
}

// visitCookieName is the name of visit s's cookie, which differs
// from visit to visit and is known only to whoever holds the
// visit's key: a server on another port of the host (cookies do not
// tell ports apart) cannot set a cookie that replaces it without knowing
// the key. With https, the __Host- prefix makes browsers refuse it from
// any other origin than a secure one of this host, with no Domain and
// Path=/.
func (t *Table) visitCookieName(key string) string {
	sum := sha256.Sum256([]byte("oauthfs settings cookie " + key))
	name := settingsCookie + hex.EncodeToString(sum[:8])
	if t.callback.Scheme == "https" {
		return "__Host-" + name
	}
	return name
}

// visit returns the settings visit named by r's s parameter when r
// also carries that visit's cookie, or nil.
func (t *Table) visit(r *http.Request) *settingsVisit {
	key := r.URL.Query().Get("s")
	if key == "" {
		return nil
	}
	t.mu.Lock()
	s := t.visits[key]
	t.mu.Unlock()
	if s == nil || !t.alive(s) || !t.hasCookie(r, s) {
		return nil
	}
	return s
}

// alive reports whether visit s has neither expired nor ended.
func (t *Table) alive(s *settingsVisit) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.visits[s.key] == s && !t.k.Now().After(s.expires)
}

// hasCookie reports whether r carries the cookie of visit s, among
// any others of the same name.
func (t *Table) hasCookie(r *http.Request, s *settingsVisit) bool {
	for _, c := range r.CookiesNamed(t.visitCookieName(s.key)) {
		if subtle.ConstantTimeCompare([]byte(c.Value), []byte(s.cookie)) == 1 {
			return true
		}
	}
	return false
}

// pageURL is the settings page of visit s.
func pageURL(s *settingsVisit) string { return "/settings?" + url.Values{"s": {s.key}}.Encode() }

// openSettings answers a one-time link: it starts a visit for the
// link's user in this browser and sends it on to /settings.
func (t *Table) openSettings(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	now := t.k.Now()
	t.mu.Lock()
	t.pruneSettingsLocked(now)
	l := t.links[key]
	delete(t.links, key) // once
	if l == nil {
		t.mu.Unlock()
		page(w, http.StatusBadRequest, "This link does not work",
			"Settings links work once, within a minute of being made. Run oauthfs settings again for a new one.")
		return
	}
	// One user's visits are bounded: the oldest goes.
	var oldest string
	n := 0
	for k, s := range t.visits {
		if s.uid == l.uid {
			n++
			if oldest == "" || s.expires.Before(t.visits[oldest].expires) {
				oldest = k
			}
		}
	}
	if n >= maxSettingsVisitsPerUser {
		delete(t.visits, oldest)
	}
	if len(t.visits) >= maxSettings {
		t.mu.Unlock()
		page(w, http.StatusServiceUnavailable, "Too many sessions", "The broker has too many settings sessions open; try again later.")
		return
	}
	s := &settingsVisit{uid: l.uid, user: userName(l.uid), key: randomID(32), cookie: randomID(32), csrf: randomID(32), expires: now.Add(settingsLife)}
	t.visits[s.key] = s
	t.mu.Unlock()
	t.route(s.key, s.expires)
	t.log.Info("settings visit started", "uid", l.uid)
	t.audit.Record(audit.Event{Event: "settings_session", User: s.user, UID: audit.UID(l.uid), Result: "started"})
	http.SetCookie(w, &http.Cookie{
		Name: t.visitCookieName(s.key), Value: s.cookie, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: t.callback.Scheme == "https", MaxAge: int(settingsLife / time.Second),
	})
	// A page of this site, not a redirect, takes the browser on: a
	// SameSite=Strict cookie is not sent on a redirect that follows a
	// navigation from elsewhere (the file:// page oauthfs settings opens).
	securityHeaders(w, "")
	w.WriteHeader(http.StatusOK)
	forwardTmpl.Execute(w, pageURL(s))
}

var forwardTmpl = template.Must(template.New("forward").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={{.}}">
<title>Managed Credentials · oauthfs</title></head>
<body><p><a href="{{.}}">Continue to Managed Credentials</a></p></body></html>
`))

// settingsView is one integration on the settings page.
type settingsView struct {
	credential.Integration
	StatusText            string
	CanSignIn, CanSignOut bool
}

// settingsPage shows the caller's integrations.
func (t *Table) settingsPage(w http.ResponseWriter, r *http.Request) {
	s := t.visit(r)
	if s == nil {
		page(w, http.StatusUnauthorized, "Managed Credentials",
			"This page needs a link of your own: run oauthfs settings in a terminal, as the user whose credentials you want to manage.")
		return
	}
	t.mu.Lock()
	flash, bad, csrf, user, uid, key := s.flash, s.flashBad, s.csrf, s.user, s.uid, s.key
	s.flash, s.flashBad = "", false
	t.mu.Unlock()
	list := t.k.Integrations(uid)
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	views := make([]settingsView, 0, len(list))
	origins := map[string]bool{}
	for _, in := range list {
		v := settingsView{Integration: in}
		switch in.Status {
		case credential.StatusSignedIn:
			v.StatusText = "Signed in"
			if in.Account != nil {
				v.StatusText += " as " + *in.Account
			}
		case credential.StatusExpired:
			v.StatusText = "Expired: sign in again"
		case credential.StatusError:
			v.StatusText = "Error"
		default:
			v.StatusText = "Not signed in"
		}
		v.CanSignIn = !in.Authenticated || in.Status != credential.StatusSignedIn
		v.CanSignOut = in.Authenticated || in.Status == credential.StatusExpired || in.Status == credential.StatusError
		if u, err := url.Parse(in.AuthURL); err == nil && u.Host != "" {
			origins[u.Scheme+"://"+u.Host] = true
		}
		views = append(views, v)
	}
	// A sign-in form is answered with a redirect to the provider, which
	// form-action must allow.
	formAction := "'self'"
	for o := range origins {
		formAction += " " + o
	}
	settingsHeaders(w, formAction)
	w.WriteHeader(http.StatusOK)
	settingsTmpl.Execute(w, map[string]any{
		"User": user, "Host": t.host, "CSRF": csrf, "Key": key, "Flash": flash, "FlashBad": bad, "Integrations": views,
	})
}

// settingsHeaders sets the headers of the settings pages: those of every
// page, with the page's own script and stylesheet allowed.
func settingsHeaders(w http.ResponseWriter, formAction string) {
	securityHeaders(w, formAction)
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "+
		"frame-ancestors 'none'; base-uri 'none'; form-action "+formAction)
}

// settingsJSON answers the page's script with the caller's integrations.
func (t *Table) settingsJSON(w http.ResponseWriter, r *http.Request) {
	s := t.visit(r)
	if s == nil {
		http.Error(w, "no session", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	json.NewEncoder(w).Encode(t.k.Integrations(s.uid))
}

// settingsAsset serves the page's stylesheet and script.
func (t *Table) settingsAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	types := map[string]string{"settings.css": "text/css; charset=utf-8", "settings.js": "text/javascript; charset=utf-8"}
	typ, ok := types[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	b, _ := assets.ReadFile("assets/" + name)
	w.Header().Set("Content-Type", typ)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(b)
}

// form checks a POST of the settings page: the browser's visit, the
// page's csrf token, and the browser's own origin. It answers 403 itself
// when they do not hold.
func (t *Table) form(w http.ResponseWriter, r *http.Request) *settingsVisit {
	if err := r.ParseForm(); err != nil {
		page(w, http.StatusBadRequest, "Managed Credentials", "The form could not be read.")
		return nil
	}
	s := t.visit(r) // the s parameter is in the form's URL
	origin, site := r.Header.Get("Origin"), r.Header.Get("Sec-Fetch-Site")
	// A page sent with Referrer-Policy: no-referrer posts its forms with
	// Origin: null (Fetch standard, "serializing a request origin"); the
	// browser's Sec-Fetch-Site then tells where the form came from.
	originOK := origin == "" || t.sameOrigin(origin) || (origin == "null" && site == "same-origin")
	ok := s != nil && originOK && (site == "" || site == "same-origin")
	if ok {
		t.mu.Lock()
		ok = subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.csrf)) == 1
		t.mu.Unlock()
	}
	if !ok {
		t.log.Warn("refused a settings form without this browser's session, page or origin", "origin", origin)
		page(w, http.StatusForbidden, "Managed Credentials", "This form did not come from your Managed Credentials page: nothing was changed.")
		return nil
	}
	return s
}

// say records what an action did, for the next page of s.
func (t *Table) say(s *settingsVisit, msg string, bad bool) {
	t.mu.Lock()
	s.flash, s.flashBad = msg, bad
	t.mu.Unlock()
}

// settingsSignIn starts a sign-in from the settings page: the browser,
// which holds the user's visit, goes straight to the provider, comes
// back to the same final confirmation as any sign-in, and then to
// /settings.
func (t *Table) settingsSignIn(w http.ResponseWriter, r *http.Request) {
	s := t.form(w, r)
	if s == nil {
		return
	}
	link, err := t.Start(s.uid, r.PathValue("guid"))
	if err != nil {
		t.say(s, "The sign-in could not start: "+err.Error(), true)
		http.Redirect(w, r, pageURL(s), http.StatusSeeOther)
		return
	}
	t.mu.Lock()
	si := t.byLogin[link.ID]
	si.phase, si.settings = phaseContinued, s
	verifier := si.verifier
	t.mu.Unlock()
	target, err := si.in.AuthCodeURL(si.state, verifier)
	if err != nil {
		t.finish(si, Failed, "the broker is too busy")
		t.say(s, "The broker is too busy right now; try again in a moment.", true)
		http.Redirect(w, r, pageURL(s), http.StatusSeeOther)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: bindingCookieName(si), Value: si.binding, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: t.callback.Scheme == "https", MaxAge: int(lifetime / time.Second),
	})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// settingsSignOut signs the user out of an integration, as oauthfs
// logout does (revocation included).
func (t *Table) settingsSignOut(w http.ResponseWriter, r *http.Request) {
	s := t.form(w, r)
	if s == nil {
		return
	}
	guid := r.PathValue("guid")
	p, err := t.k.Provider(guid)
	if err != nil {
		t.say(s, "There is no such integration.", true)
		http.Redirect(w, r, pageURL(s), http.StatusSeeOther)
		return
	}
	name := p.Config().DisplayName
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	note, err := t.k.SignOut(ctx, s.uid, p.Config().GUID.String())
	switch {
	case err != nil:
		t.say(s, "Signed out of "+name+" here, but: "+err.Error(), true)
	case note != "":
		t.say(s, "Signed out of "+name+". "+note, false)
	default:
		t.say(s, "Signed out of "+name+".", false)
	}
	http.Redirect(w, r, pageURL(s), http.StatusSeeOther)
}

// settingsEnd ends this browser's visit.
func (t *Table) settingsEnd(w http.ResponseWriter, r *http.Request) {
	s := t.form(w, r)
	if s == nil {
		return
	}
	t.mu.Lock()
	delete(t.visits, s.key)
	s.expires = time.Time{}
	t.mu.Unlock()
	t.audit.Record(audit.Event{Event: "settings_session", User: s.user, UID: audit.UID(s.uid), Result: "ended"})
	http.SetCookie(w, &http.Cookie{Name: t.visitCookieName(s.key), Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: t.callback.Scheme == "https"})
	page(w, http.StatusOK, "Session ended", "This browser no longer has your Managed Credentials page. Run oauthfs settings for a new link.")
}

// settingsForLocked returns the settings visit sign-in si started from, when
// r's browser holds it and it is alive: where the sign-in ends. Callers
// hold t.mu.
func (t *Table) settingsForLocked(r *http.Request, si *signin) *settingsVisit {
	s := si.settings
	if s == nil || t.visits[s.key] != s || t.k.Now().After(s.expires) || !t.hasCookie(r, s) {
		return nil
	}
	return s
}
