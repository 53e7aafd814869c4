package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func events(t *testing.T, path string) []Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, ev)
	}
	return out
}

func TestLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		l.Record(Event{Event: "refresh", Reason: strconv.Itoa(i), UID: UID(1000 + i%10)})
	}
	// Rotation: the file is moved away and the log reopened.
	l.Close()
	got := events(t, path)
	if len(got) != 1000 {
		t.Fatalf("%d events; want 1000", len(got))
	}
	for i, ev := range got {
		if ev.Reason != strconv.Itoa(i) || ev.Time.IsZero() || *ev.UID != 1000+i%10 {
			t.Fatalf("event %d = %+v; want them in order, with a time", i, ev)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v; want 0600", st.Mode().Perm())
	}
	l.Record(Event{Event: "late"}) // after Close: nothing, no panic
	l.Close()
	var none *Log
	none.Record(Event{Event: "x"}) // a nil log records nothing
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Event: "one"})
	l.Close()
	l, _ = Open(path, nil)
	defer l.Close()
	os.Rename(path, path+".1")
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Event: "two"})
	l.Close()
	if a, b := events(t, path+".1"), events(t, path); len(a) != 1 || len(b) != 1 || b[0].Event != "two" {
		t.Errorf("rotated %+v, new %+v", a, b)
	}
}

func TestBadPath(t *testing.T) {
	for _, p := range []string{t.TempDir(), "/nonexistent/dir/audit.jsonl"} {
		if _, err := Open(p, nil); err == nil {
			t.Errorf("Open(%s) succeeded", p)
		}
	}
}

// TestPlantedPath: the root broker opens audit_log at start and at every
// SIGHUP; a symbolic link there, a file of another user or a directory
// others may write to is refused, at Open and at Reopen (which keeps the
// file it had).
func TestPlantedPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user")
	}
	for _, tc := range []struct {
		name  string
		plant func(dir, path string)
		want  string
	}{
		{"a symbolic link", func(dir, path string) { os.Symlink(filepath.Join(dir, "elsewhere"), path) }, "symbolic link"},
		{"another user's file", func(dir, path string) { os.WriteFile(path, nil, 0o600); os.Chown(path, 65534, 65534) }, "belongs to uid 65534"},
		{"a directory others may write to", func(dir, path string) { os.Chmod(dir, 0o777) }, "group or others can replace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "log")
			os.Mkdir(dir, 0o700)
			path := filepath.Join(dir, "audit.jsonl")
			tc.plant(dir, path)
			if _, err := Open(path, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open = %v; want %q", err, tc.want)
			}
		})
		t.Run(tc.name+" at reopen", func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "log")
			os.Mkdir(dir, 0o700)
			path := filepath.Join(dir, "audit.jsonl")
			l, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			os.Rename(path, path+".1")
			tc.plant(dir, path)
			if err := l.Reopen(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Reopen = %v; want %q", err, tc.want)
			}
			l.Record(Event{Event: "kept"})
			l.Close()
			if got := events(t, path+".1"); len(got) != 1 || got[0].Event != "kept" {
				t.Errorf("after a refused reopen the log wrote %+v to the old file; want the event there", got)
			}
			if _, err := os.Stat(filepath.Join(dir, "elsewhere")); err == nil {
				t.Errorf("the link's target was created")
			}
		})
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestFailuresAreCounted: a write that fails is counted and holds nothing
// up.
func TestFailuresAreCounted(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.w = failing{}
	l.mu.Unlock()
	for range 10 {
		l.Record(Event{Event: "x"})
	}
	l.Close()
	if n := l.Failures(); n != 10 {
		t.Errorf("%d failures counted; want 10", n)
	}
}

// TestLogBoundsWhatOneUserWrites: a uid that floods the broker with
// requests (unknown integrations with 15 KB names, say) cannot fill the
// disk: fields are cut, identical events merge, a uid's events beyond its
// rate are dropped and summed up, and other uids' events are written.
func TestLogBoundsWhatOneUserWrites(t *testing.T) {
	repeatWindow = 300 * time.Millisecond
	defer func() { repeatWindow = 10 * time.Second }()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 15<<10)
	began := time.Now()
	for i := range 5000 {
		l.Record(Event{Event: "token", UID: UID(1), Result: "not_found", Reason: strconv.Itoa(i) + long})
		if i == 2500 {
			l.Record(Event{Event: "sign_in", UID: UID(2), Integration: "Test", Result: "ok"})
		}
	}
	for range 1000 {
		l.Record(Event{Event: "token", UID: UID(3), Result: "not_found", Reason: "no integration has that name or guid", PID: 42})
	}
	took := time.Since(began)
	// The flusher writes the merged repeats and the summary of what was
	// dropped once the window is over.
	deadline := time.Now().Add(10 * time.Second)
	var got []Event
	for {
		got = events(t, path)
		dropped, merged := false, false
		for _, ev := range got {
			dropped = dropped || ev.Event == "audit_dropped"
			merged = merged || *ev.UID == 3 && ev.Count > 0
		}
		if dropped && merged {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit_dropped and merged lines after 10 s: %d lines", len(got))
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.Close()
	got = events(t, path)
	raw, _ := os.ReadFile(path)
	counts := map[int]int{}
	dropped := 0
	for _, ev := range got {
		switch {
		case ev.Event == "audit_dropped":
			if *ev.UID != 1 {
				t.Errorf("audit_dropped = %+v; want uid 1's", ev)
			}
			dropped += ev.Count
			continue
		case *ev.UID == 3 && ev.Count > 0:
			if ev.Count != 999 {
				t.Errorf("merged repeats = %d; want 999", ev.Count)
			}
		case len(ev.Reason) > maxText+len("…"):
			t.Errorf("a reason of %d bytes was written", len(ev.Reason))
		}
		counts[*ev.UID]++
	}
	if counts[1]+dropped != 5000 {
		t.Errorf("uid 1: %d lines and %d dropped; want 5,000 in all", counts[1], dropped)
	}
	if counts[2] != 1 {
		t.Errorf("uid 2's sign-in written %d times; want once, whatever uid 1 does", counts[2])
	}
	if counts[1] > perUIDBurst+int(took.Seconds()*perUIDRate)+2 || counts[3] != 2 {
		t.Errorf("lines per uid = %v; want at most the burst for uid 1 and two for uid 3's repeats", counts)
	}
	if len(raw) > 200<<10 {
		t.Errorf("the log holds %d bytes after 6,000 events of three uids; want it bounded", len(raw))
	}
	if l.Failures() < 4000 {
		t.Errorf("Failures() = %d; want the dropped events counted", l.Failures())
	}
	t.Logf("%d lines, %d bytes, %d events counted as lost", len(got), len(raw), l.Failures())
}
