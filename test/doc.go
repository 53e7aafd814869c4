// Package test holds oauthfs's end-to-end tests: a real FUSE mount read
// through the kernel (os.ReadFile, cat, python3), a real broker, and an
// OAuth provider on 127.0.0.1; and the real oauthfs binary driven as a
// user would drive it.
package test
