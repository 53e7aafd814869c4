package broker

import (
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/credential"
)

// TestUpdatesNeverDropASession: a session that falls behind misses
// updates (what it keeps stays valid until its refresh time), but a change
// it must act on drops it when its queue is full.
func TestUpdatesNeverDropASession(t *testing.T) {
	f := newFixture(t, time.Second)
	sub, err := f.b.Subscribe(uid)
	if err != nil {
		t.Fatal(err)
	}
	defer f.b.Unsubscribe(sub)
	for range 200 {
		f.b.notify(uid, EventUpdated, "g")
	}
	select {
	case <-sub.Dead():
		t.Fatal("a flood of updates dropped the session")
	default:
	}
	for i := range 64 {
		ev := <-sub.C
		if ev.Seq != uint64(i+1) || ev.Kind != EventUpdated || ev.Change() != (credential.Change{GUID: "g"}) {
			t.Fatalf("event %d = %+v; want update %d", i, ev, i+1)
		}
	}
	for range 64 {
		f.b.notify(uid, EventUpdated, "g")
	}
	f.b.publish(uid, EventChanged, "g") // the queue is full: dropped at once
	select {
	case <-sub.Dead():
	case <-time.After(5 * time.Second):
		t.Fatal("a session that cannot take a change was not dropped")
	}
}
