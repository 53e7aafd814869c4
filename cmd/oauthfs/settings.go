package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"syscall"
	"time"
)

var settingsCommand = &command{
	name: "settings", args: "[--no-browser] [--sign-out-everywhere]",
	summary: "open your Managed Credentials page in a browser",
	help: "Open your Managed Credentials page: every integration, its status, Sign in\n" +
		"and Sign out, and its details. Prints a one-time link (it works once, within\n" +
		"a minute) on its own line and opens it in a browser ($BROWSER, or\n" +
		"xdg-open) unless --no-browser. The page lasts a working day in the browser\n" +
		"that opened it; --sign-out-everywhere ends it in every browser instead.",
	flags: settingsFlags,
}

// settingsFlags declares the flags of oauthfs settings.
func settingsFlags(fs *flag.FlagSet) runFunc {
	sock, cfg := socketFlags(fs)
	noBrowser := fs.Bool("no-browser", false, "only print the link; open it yourself")
	end := fs.Bool("sign-out-everywhere", false, "end every settings session of yours, in every browser")
	return func(stdout, stderr io.Writer) error {
		if fs.NArg() != 0 {
			return usageErrorf("settings takes no arguments")
		}
		c, ctx, cancel, err := dial(*sock, *cfg)
		if err != nil {
			return err
		}
		defer cancel()
		if *end {
			n, err := c.EndSettings(ctx)
			if err != nil {
				return explain(err, "")
			}
			fmt.Fprintf(stdout, "ended %d settings session%s\n", n, map[bool]string{true: "", false: "s"}[n == 1])
			return nil
		}
		l, err := c.Settings(ctx)
		if err != nil {
			return explain(err, "")
		}
		if err := linkOK(l.URL); err != nil {
			return err
		}
		fmt.Fprintln(stdout, l.URL)
		syncOut(stdout)
		if *noBrowser {
			fmt.Fprintln(stderr, "Open the link above in a browser within a minute; it works once.")
			return nil
		}
		opened, page, cleanup := openBrowser(l.URL)
		defer cleanup()
		if !opened {
			fmt.Fprintln(stderr, "Open the link above in a browser within a minute; it works once.")
			return nil
		}
		fmt.Fprintln(stderr, "Opened your Managed Credentials page in a browser.")
		// The browser reads the page that forwards it to the link after it
		// starts: remove the page once it has been read, or the link has
		// expired.
		waitRead(ctx, page, time.Until(l.Expires))
		return nil
	}
}

// waitRead waits until the file has been read since it was written (its
// access time passed its modification time), for at most d or until ctx
// ends.
func waitRead(ctx context.Context, file string, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var st syscall.Stat_t
		if syscall.Stat(file, &st) != nil || time.Unix(st.Atim.Unix()).After(time.Unix(st.Mtim.Unix())) {
			time.Sleep(time.Second) // let the browser follow the forward
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
