package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
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
		l.Record(Event{Event: "refresh", Reason: strconv.Itoa(i), UID: UID(1000)})
	}
	// Rotation: the file is moved away and the log reopened.
	l.Close()
	got := events(t, path)
	if len(got) != 1000 {
		t.Fatalf("%d events; want 1000", len(got))
	}
	for i, ev := range got {
		if ev.Reason != strconv.Itoa(i) || ev.Time.IsZero() || *ev.UID != 1000 {
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
