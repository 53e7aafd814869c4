package signin

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDeviceSignIn runs device sign-ins (RFC 8628) through the table
// against the local provider: approved, denied, expired and cancelled,
// and refused for an integration without a device endpoint.
func TestDeviceSignIn(t *testing.T) {
	const device = `device_auth_url = "{provider}/device/code"`
	for _, tc := range []struct {
		name   string
		life   time.Duration
		act    func(f *signinFixture, l *DeviceLink)
		status State
		text   string
	}{
		{"approved", time.Minute, func(f *signinFixture, _ *DeviceLink) { f.p.DeviceDecide(true) }, SignedIn, ""},
		{"denied", time.Minute, func(f *signinFixture, _ *DeviceLink) { f.p.DeviceDecide(false) }, Failed, "denied"},
		{"expired", 2 * time.Second, func(*signinFixture, *DeviceLink) {}, Failed, "expired"},
		{"cancelled", time.Minute, func(f *signinFixture, l *DeviceLink) { f.s.Cancel(uid, l.ID) }, Failed, "cancelled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newSigninFixture(t, device)
			f.p.SetDevice(time.Second, tc.life)
			l, err := f.s.StartDevice(context.Background(), uid, "Test")
			if err != nil {
				t.Fatal(err)
			}
			if l.UserCode == "" || l.VerificationURI != f.p.URL+"/device" || !strings.Contains(l.VerificationURIComplete, l.UserCode) || l.Name != "Test" {
				t.Fatalf("device link = %+v", l)
			}
			time.AfterFunc(1200*time.Millisecond, func() { tc.act(f, l) })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := f.s.Wait(ctx, uid, l.ID)
			if err != nil || st.Status != tc.status || !strings.Contains(st.Message, tc.text) {
				t.Fatalf("Wait = %+v, %v; want %s %q", st, err, tc.status, tc.text)
			}
			_, err = f.b.Token(context.Background(), uid, "Test")
			if (err == nil) != (tc.status == SignedIn) {
				t.Errorf("Token after the device sign-in = %v", err)
			}
			if tc.status == SignedIn {
				return
			}
			// Nothing polls the provider once a sign-in has ended (a
			// request already on its way may still land).
			time.Sleep(300 * time.Millisecond)
			n := len(f.p.DevicePolls())
			time.Sleep(2500 * time.Millisecond)
			if m := len(f.p.DevicePolls()); m != n {
				t.Errorf("%d polls after the sign-in ended", m-n)
			}
		})
	}
	t.Run("no device endpoint", func(t *testing.T) {
		f := newSigninFixture(t)
		_, err := f.s.StartDevice(context.Background(), uid, "Test")
		if err == nil || !strings.Contains(err.Error(), "device_auth_url") {
			t.Errorf("StartDevice = %v; want an error that names device_auth_url", err)
		}
	})
	t.Run("secrets stay out of the logs", func(t *testing.T) {
		f := newSigninFixture(t, device)
		p := f.p
		p.SetDevice(time.Second, time.Minute)
		l, err := f.s.StartDevice(context.Background(), uid, "Test")
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(500*time.Millisecond, func() { p.DeviceDecide(true) })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if st, _ := f.s.Wait(ctx, uid, l.ID); st.Status != SignedIn {
			t.Fatalf("status %+v", st)
		}
		logs := f.logs.String()
		for _, secret := range []string{"tok-at-", "tok-rt-", "dc-", "test-secret"} {
			if strings.Contains(logs, secret) {
				t.Errorf("logs contain %q", secret)
			}
		}
	})
}

// TestDeviceSignInBounds: one user's device sign-ins reach the provider
// at most maxDeviceStarts times a minute, however many start at once and
// whether or not they are cancelled.
func TestDeviceSignInBounds(t *testing.T) {
	f := newSigninFixture(t, `device_auth_url = "{provider}/device/code"`)
	f.p.SetDevice(time.Minute, time.Minute)
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l, err := f.s.StartDevice(context.Background(), uid, "Test"); err == nil {
				ok.Add(1)
				f.s.Cancel(uid, l.ID)
			}
		}()
	}
	wg.Wait()
	if n := f.p.DeviceCodes(); n > maxDeviceStarts || int(ok.Load()) != n {
		t.Errorf("%d device codes issued, %d starts succeeded; want at most %d", n, ok.Load(), maxDeviceStarts)
	}
	if _, err := f.s.StartDevice(context.Background(), uid, "Test"); err == nil || !strings.Contains(err.Error(), "wait a minute") {
		t.Errorf("a start past the bound = %v", err)
	}
	if l, err := f.s.StartDevice(context.Background(), uid+1, "Test"); err != nil {
		t.Errorf("another user's start = %v", err)
	} else {
		f.s.Cancel(uid+1, l.ID)
	}
	f.clk.Advance(deviceWindow)
	if l, err := f.s.StartDevice(context.Background(), uid, "Test"); err != nil {
		t.Errorf("a start a minute later = %v", err)
	} else {
		f.s.Cancel(uid, l.ID)
	}
}
