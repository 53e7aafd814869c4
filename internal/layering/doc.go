// Package layering holds no code: its test checks the import rules that
// the other packages' documentation states (docs/architecture.md), with
// go list, so that the layering cannot drift silently.
package layering
