package localprovider

// ID tokens (OpenID Connect Core), their signing key (JWKS), and resource
// indicators (RFC 8707).

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"strings"
	"time"
)

// keyID names the provider's one signing key in its JWKS and in the
// headers of its ID tokens.
const keyID = "localprovider-1"

// signingKey returns the provider's RSA key, made on first use.
func (p *Provider) signingKey() *rsa.PrivateKey {
	p.keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic("localprovider: " + err.Error())
		}
		p.key = k
	})
	return p.key
}

// jwks answers the provider's public keys (RFC 7517).
func (p *Provider) jwks(w http.ResponseWriter, _ *http.Request) {
	pub := p.signingKey().PublicKey
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": keyID,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}

// idToken returns a new ID token for the provider's one user, for its
// client, signed RS256, living as long as the access tokens, and
// remembers it.
func (p *Provider) idToken(life time.Duration) string {
	now := time.Now()
	p.mu.Lock()
	p.idTokens++
	n := p.idTokens
	p.mu.Unlock()
	head, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": keyID})
	claims, _ := json.Marshal(map[string]any{
		"iss": p.URL, "sub": "dev-user", "aud": p.ClientID, "azp": p.ClientID,
		"iat": now.Unix(), "exp": now.Add(life).Unix(),
		"email": "dev-user@localprovider.test", "jti": random(), "n": n,
	})
	signing := base64.RawURLEncoding.EncodeToString(head) + "." + base64.RawURLEncoding.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, p.signingKey(), crypto.SHA256, sum[:])
	if err != nil {
		panic("localprovider: " + err.Error())
	}
	t := signing + "." + base64.RawURLEncoding.EncodeToString(sig)
	p.mu.Lock()
	p.lastID = t
	p.mu.Unlock()
	return t
}

// LastIDToken returns the ID token the provider issued last, or "".
func (p *Provider) LastIDToken() string { p.mu.Lock(); defer p.mu.Unlock(); return p.lastID }

// IDTokens returns how many ID tokens the provider has issued.
func (p *Provider) IDTokens() int { p.mu.Lock(); defer p.mu.Unlock(); return p.idTokens }

// SetResources makes the provider accept the resource parameter (RFC
// 8707) for these resources only, refusing others with invalid_target;
// none (the default) ignores the parameter.
func (p *Provider) SetResources(resources ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resources = map[string]bool{}
	for _, r := range resources {
		p.resources[r] = true
	}
}

// Audience returns the resource access token at was issued for ("" for
// none).
func (p *Provider) Audience(at string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.audience[at]
}

// ScopeOf returns the scope access token at was issued with.
func (p *Provider) ScopeOf(at string) string { p.mu.Lock(); defer p.mu.Unlock(); return p.scopeOf[at] }

// target checks a token request's resource and scope parameters, and
// returns the resource and the scope to issue, or an error code and
// description. Callers hold p.mu.
func (p *Provider) targetLocked(resource, scope string) (string, string, string, string) {
	if resource != "" && p.resources != nil && !p.resources[resource] {
		return "", "", "invalid_target", "the resource is not one this server serves"
	}
	granted := "read write"
	if scope != "" {
		for _, s := range strings.Fields(scope) {
			if s != "read" && s != "write" && s != "openid" && !strings.Contains(s, "/") && !strings.Contains(s, ".") {
				return "", "", "invalid_scope", "a scope the grant does not hold"
			}
		}
		granted = scope
	}
	return resource, granted, "", ""
}
