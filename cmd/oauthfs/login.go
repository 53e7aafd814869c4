package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/oauthfs/oauthfs/broker/api"
)

func runLogin(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("login", "[--no-browser] NAME|GUID",
		"Sign in to the integration. Prints the sign-in link on its own line,\n"+
			"opens it in a browser ($BROWSER, or xdg-open) unless --no-browser, and\n"+
			"waits until the sign-in completes.", stderr)
	sock, cfg := socketFlags(fs)
	noBrowser := fs.Bool("no-browser", false, "only print the link; open it yourself")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this `duration`")
	id, c, ctx, cancel, err := dialFor(fs, args, sock, cfg)
	if err != nil {
		return err
	}
	defer cancel()
	si, err := c.Login(ctx, id)
	if err != nil {
		return explain(err, id)
	}
	fmt.Fprintln(stdout, si.URL)
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	opened := false
	if !*noBrowser {
		opened = openBrowser(si.URL)
	}
	if opened {
		fmt.Fprintf(stderr, "Opened the sign-in link in a browser. Waiting for the sign-in to %s to complete (Ctrl-C to cancel)...\n", si.Name)
	} else {
		fmt.Fprintf(stderr, "Open the link above in a browser. Waiting for the sign-in to %s to complete (Ctrl-C to cancel)...\n", si.Name)
	}
	deadline := time.Now().Add(*timeout)
	for {
		st, err := c.WaitLogin(ctx, si.ID, 10*time.Second)
		switch {
		case ctx.Err() != nil:
			c.CancelLogin(context.Background(), si.ID)
			return fmt.Errorf("sign-in to %s cancelled", si.Name)
		case err != nil:
			return explain(err, id)
		case st.Status == "signed_in":
			fmt.Fprintf(stdout, "signed in to %s\n", si.Name)
			return nil
		case st.Status == "failed":
			return withHint(fmt.Errorf("sign-in to %s failed: %s: %w", si.Name, st.Message, api.ErrSignIn), "run 'oauthfs login %s' to try again", si.Name)
		}
		if time.Now().After(deadline) {
			c.CancelLogin(context.Background(), si.ID)
			return withHint(fmt.Errorf("sign-in to %s did not complete within %v: %w", si.Name, *timeout, api.ErrSignIn), "run 'oauthfs login %s' to try again", si.Name)
		}
	}
}

// openBrowser opens url with $BROWSER (a colon-separated list of
// commands, %s standing for the URL) or xdg-open, without waiting for it.
// It reports whether a browser was started.
func openBrowser(url string) bool {
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
					f[i], replaced = strings.ReplaceAll(f[i], "%s", url), true
				}
			}
			if !replaced {
				f = append(f, url)
			}
			cands = append(cands, f)
		}
	}
	if os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != "" {
		cands = append(cands, []string{"xdg-open", url})
	}
	for _, c := range cands {
		path, err := exec.LookPath(c[0])
		if err != nil {
			continue
		}
		cmd := exec.Command(path, c[1:]...)
		if err := cmd.Start(); err == nil {
			go cmd.Wait()
			return true
		}
	}
	return false
}
