// Package signin is the broker's web server and what it serves:
//
//   - browser sign-in: the table of sign-ins in progress, the start link
//     and its confirmation page, and the callback, with PKCE (S256), a
//     single-use state bound to the user who started it and to the
//     browser that opened it, and the RFC 9207 issuer check;
//   - device sign-in (RFC 8628): the broker polls the provider while the
//     user enters a code on another device ([DeviceLink]);
//   - the Managed Credentials (settings) page, reached by a one-time link
//     ([SettingsLink]) and kept by one browser for a working day (a
//     visit);
//   - in a cluster, forwarding a request to the broker that holds its
//     sign-in or visit ([Router], [ClusterOptions]), signed with a key
//     derived from the store's.
//
// It reaches a broker through the small [Keeper] interface and a provider
// through provider.Client. It must never import the broker, the session
// API or the filesystem.
package signin
