package fusefs

import (
	"testing"
	"time"
)

func TestClockJumped(t *testing.T) {
	for _, tc := range []struct {
		name       string
		wall, mono time.Duration
		want       bool
	}{
		{"steady", time.Second, time.Second, false},
		{"a slow tick", 1500 * time.Millisecond, 1500 * time.Millisecond, false},
		{"ntp nudges", 1100 * time.Millisecond, time.Second, false},
		{"wall set back", -time.Hour, time.Second, false},
		{"suspended for a minute", time.Minute + time.Second, time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := clockJumped(tc.wall, tc.mono); got != tc.want {
				t.Errorf("clockJumped(%v, %v) = %v; want %v", tc.wall, tc.mono, got, tc.want)
			}
		})
	}
}
