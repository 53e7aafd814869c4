package main

import (
	"context"
	"flag"
	"fmt"
	"html/template"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/oauthfs/oauthfs/api"
	"github.com/oauthfs/oauthfs/client"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
)

var loginCommand = &command{
	name: "login", args: "[--no-browser | --device] NAME|GUID",
	summary: "sign in to an integration in a browser, or with a code on another device",
	help: "Sign in to the integration. Prints the sign-in link on its own line,\n" +
		"opens it in a browser ($BROWSER, or xdg-open) unless --no-browser, and\n" +
		"waits until the sign-in completes. With --device (for sessions whose\n" +
		"browser cannot reach the broker, such as SSH), prints a page to open on\n" +
		"any device and the code to check there, and waits while the broker\n" +
		"polls the provider (RFC 8628; the integration needs device_auth_url).",
	flags: loginFlags,
}

// loginFlags declares the flags of oauthfs login.
func loginFlags(fs *flag.FlagSet) runFunc {
	sock, cfg := socketFlags(fs)
	noBrowser := fs.Bool("no-browser", false, "only print the link; open it yourself")
	device := fs.Bool("device", false, "sign in with a code on another device (RFC 8628)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this `duration`")
	return func(stdout, stderr io.Writer) error {
		id, c, ctx, cancel, err := dialFor(fs, sock, cfg)
		if err != nil {
			return err
		}
		defer cancel()
		if *device {
			return deviceLogin(ctx, c, id, *timeout, stdout, stderr)
		}
		si, err := c.Login(ctx, id)
		if err != nil {
			return explain(err, id)
		}
		si.Name = printable.String(si.Name, 255)
		if err := linkOK(si.URL); err != nil {
			c.CancelLogin(context.Background(), si.ID)
			return err
		}
		fmt.Fprintln(stdout, si.URL)
		syncOut(stdout)
		opened := false
		if !*noBrowser {
			var cleanup func()
			opened, _, cleanup = openBrowser(si.URL)
			defer cleanup()
		}
		if opened {
			fmt.Fprintf(stderr, "Opened the sign-in link in a browser. Waiting for the sign-in to %s to complete (Ctrl-C to cancel)...\n", si.Name)
		} else {
			fmt.Fprintf(stderr, "Open the link above in a browser. Waiting for the sign-in to %s to complete (Ctrl-C to cancel)...\n", si.Name)
		}
		return waitSignIn(ctx, c, si.ID, si.Name, *timeout, stdout)
	}
}

// deviceLogin runs 'login --device': it prints the page to open and the
// code, and waits while the broker polls the provider.
func deviceLogin(ctx context.Context, c *client.Client, id string, timeout time.Duration, stdout, stderr io.Writer) error {
	si, err := c.DeviceLogin(ctx, id)
	if err != nil {
		return explain(err, id)
	}
	si.Name = printable.String(si.Name, 255)
	page := si.VerificationURIComplete
	if page == "" {
		page = si.VerificationURI
	}
	if err := linkOK(page); err != nil {
		c.CancelLogin(context.Background(), si.ID)
		return err
	}
	fmt.Fprintln(stdout, page)
	fmt.Fprintln(stdout, "code:", printable.String(si.UserCode, 64))
	syncOut(stdout)
	fmt.Fprintf(stderr, "Open the page above on any device, check that it shows the code, and approve the sign-in to %s. Waiting (Ctrl-C to cancel)...\n", si.Name)
	return waitSignIn(ctx, c, si.ID, si.Name, timeout, stdout)
}

// syncOut flushes stdout when it is a file, so that a program reading it
// sees the link before login waits.
func syncOut(stdout io.Writer) {
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
}

// waitSignIn waits for the sign-in loginID to end, asking the broker at
// most once a second, and prints "signed in to NAME [as ACCOUNT]".
func waitSignIn(ctx context.Context, c *client.Client, loginID, name string, timeout time.Duration, stdout io.Writer) error {
	deadline := time.Now().Add(timeout)
	for {
		asked := time.Now()
		st, err := c.WaitLogin(ctx, loginID, 10*time.Second)
		switch {
		case ctx.Err() != nil:
			c.CancelLogin(context.Background(), loginID)
			return fmt.Errorf("sign-in to %s cancelled", name)
		case err != nil:
			return explain(err, name)
		case st.Status == api.SignInSignedIn:
			if st.Account != "" {
				fmt.Fprintf(stdout, "signed in to %s as %s\n", name, printable.String(st.Account, 200))
			} else {
				fmt.Fprintf(stdout, "signed in to %s\n", name)
			}
			return nil
		case st.Status == api.SignInFailed:
			return explain(fmt.Errorf("sign-in to %s failed: %s: %w", name, st.Message, credential.ErrSignIn), name)
		}
		if time.Now().After(deadline) {
			c.CancelLogin(context.Background(), loginID)
			return explain(fmt.Errorf("sign-in to %s did not complete within %v: %w", name, timeout, credential.ErrSignIn), name)
		}
		// A broker that answers at once without waiting must not make
		// this loop spin.
		select {
		case <-time.After(time.Until(asked.Add(minPoll))):
		case <-ctx.Done():
		}
	}
}

// minPoll is the shortest time between two questions about a sign-in.
const minPoll = time.Second

// linkOK refuses a sign-in link that is not http or https: only those
// are ever handed to a browser.
func linkOK(link string) error {
	u, err := url.Parse(link)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("login: the broker sent a sign-in link that is not an http or https URL; it was not opened: %w", credential.ErrSignIn)
	}
	return nil
}

// openBrowser opens link in a browser without putting it on any command
// line: the link is secret until used, and every user can read every
// process's arguments in /proc. It writes a page that forwards to link
// into a new file only this user can read, and opens that file with
// $BROWSER (a colon-separated list of commands, %s standing for the file's
// URL) or xdg-open. It reports whether a browser was started, and returns
// the file and a function that removes it.
func openBrowser(link string) (bool, string, func()) {
	nop := func() {}
	if linkOK(link) != nil {
		return false, "", nop
	}
	page, cleanup, err := forwardPage(link)
	if err != nil {
		return false, "", nop
	}
	var cands [][]string
	if b := os.Getenv("BROWSER"); b != "" {
		for _, c := range strings.Split(b, ":") {
			f := strings.Fields(c)
			if len(f) == 0 {
				continue
			}
			replaced := false
			for i := range f {
				if strings.Contains(f[i], "%s") {
					f[i], replaced = strings.ReplaceAll(f[i], "%s", page), true
				}
			}
			if !replaced {
				f = append(f, page)
			}
			cands = append(cands, f)
		}
	}
	if os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != "" {
		cands = append(cands, []string{"xdg-open", page})
	}
	for _, c := range cands {
		path, err := exec.LookPath(c[0])
		if err != nil {
			continue
		}
		cmd := exec.Command(path, c[1:]...)
		if err := cmd.Start(); err == nil {
			go cmd.Wait()
			file := strings.TrimPrefix(page, "file://")
			if u, err := url.Parse(page); err == nil {
				file = u.Path // unescaped: a TMPDIR with spaces is %20 in the URL
			}
			return true, file, cleanup
		}
	}
	cleanup()
	return false, "", nop
}

var forwardTmpl = template.Must(template.New("forward").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={{.}}">
<meta name="referrer" content="no-referrer"><title>oauthfs sign-in</title></head>
<body><p><a href="{{.}}">Continue to the oauthfs sign-in page</a></p></body></html>
`))

// forwardPage writes a page that sends the browser on to link, in a new
// directory only this user can enter, and returns its file:// URL and a
// function that removes it.
func forwardPage(link string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "oauthfs-login-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	f, err := os.OpenFile(filepath.Join(dir, "sign-in.html"), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		cleanup()
		return "", nil, err
	}
	werr := forwardTmpl.Execute(f, link)
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		cleanup()
		return "", nil, werr
	}
	return (&url.URL{Scheme: "file", Path: f.Name()}).String(), cleanup, nil
}
