package main

import (
	"os"
	"os/signal"
	"syscall"
)

// waitForStop is the one signal loop of the long-running commands. It
// returns when done is closed (the mount went away; nil) or when SIGINT or
// SIGTERM arrives (the signal). With reload set, SIGHUP calls it in a
// goroutine of its own, one reload at a time, so that a stop is never
// held up by a reload.
func waitForStop(done <-chan struct{}, reload func()) os.Signal {
	sigs := make(chan os.Signal, 1)
	watch := []os.Signal{syscall.SIGINT, syscall.SIGTERM}
	if reload != nil {
		watch = append(watch, syscall.SIGHUP)
	}
	signal.Notify(sigs, watch...)
	defer signal.Stop(sigs)
	reloads := make(chan struct{}, 1)
	if reload != nil {
		go func() {
			for range reloads {
				reload()
			}
		}()
		defer close(reloads)
	}
	for {
		select {
		case <-done:
			return nil
		case s := <-sigs:
			if s != syscall.SIGHUP {
				return s
			}
			select {
			case reloads <- struct{}{}:
			default: // one is pending already; it will read the newest file
			}
		}
	}
}
