package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLinkOK(t *testing.T) {
	for _, tc := range []struct {
		link string
		ok   bool
	}{
		{"http://127.0.0.1:8400/start?state=x", true},
		{"https://oauth.example.com/start?state=x", true},
		{"file:///etc/passwd", false},
		{"javascript:alert(1)", false},
		{"ftp://example.com/x", false},
		{"http:///nohost", false},
		{"not a url\x1b[2J", false},
	} {
		if err := linkOK(tc.link); (err == nil) != tc.ok {
			t.Errorf("linkOK(%q) = %v; want ok %v", tc.link, err, tc.ok)
		}
	}
}

// TestOpenBrowserHandsOverAFile: the browser's command line holds a
// file:// page of the user's own, never the link itself.
func TestOpenBrowserHandsOverAFile(t *testing.T) {
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	script := filepath.Join(dir, "browser")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" > "+args+"\n"), 0o755)
	t.Setenv("BROWSER", script+" --new-window %s")
	t.Setenv("DISPLAY", "")
	link := "http://127.0.0.1:8400/start?state=SECRETSTATE"
	opened, file, cleanup := openBrowser(link)
	if !opened {
		t.Fatal("openBrowser = false")
	}
	var got []byte
	for deadline := time.Now().Add(10 * time.Second); len(got) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got, _ = os.ReadFile(args)
	}
	f := strings.Fields(string(got))
	if len(f) != 2 || f[0] != "--new-window" || !strings.HasPrefix(f[1], "file:///") || strings.Contains(string(got), "SECRETSTATE") {
		t.Fatalf("browser argv = %q; want --new-window and a file:// URL, without the state", got)
	}
	page := strings.TrimPrefix(f[1], "file://")
	if page != file {
		t.Errorf("openBrowser returned the page %q; the browser got %q", file, page)
	}
	st, err := os.Stat(page)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("forwarding page: %v; want mode 0600", err)
	}
	if dst, _ := os.Stat(filepath.Dir(page)); dst.Mode().Perm() != 0o700 {
		t.Errorf("forwarding page's directory mode %v; want 0700", dst.Mode().Perm())
	}
	body, _ := os.ReadFile(page)
	if !strings.Contains(string(body), `url=http://127.0.0.1:8400/start?state=SECRETSTATE`) {
		t.Errorf("forwarding page = %s; want a refresh to the link", body)
	}
	cleanup()
	if _, err := os.Stat(filepath.Dir(page)); err == nil {
		t.Errorf("cleanup left %s", filepath.Dir(page))
	}
	if ok, _, _ := openBrowser("file:///etc/passwd"); ok {
		t.Errorf("openBrowser opened a file: link")
	}
}

// TestWaitRead: waitRead returns once the file has been read since it was
// written, and otherwise after its time.
func TestWaitRead(t *testing.T) {
	f := filepath.Join(t.TempDir(), "page.html")
	os.WriteFile(f, []byte("x"), 0o600)
	past := time.Now().Add(-time.Hour)
	os.Chtimes(f, past, time.Now()) // written, not read since
	start := time.Now()
	waitRead(t.Context(), f, 300*time.Millisecond)
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("waitRead of an unread file returned after %v; want its time", el)
	}
	os.Chtimes(f, time.Now().Add(time.Minute), time.Now()) // read
	start = time.Now()
	waitRead(t.Context(), f, time.Minute)
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("waitRead of a read file took %v", el)
	}
}
