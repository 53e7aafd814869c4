package broker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// Logout forgets user uid's tokens for the integration with guid or name
// id, in memory and on disk, then revokes the refresh token at the
// provider when revocation_url is configured (RFC 7009).
func (b *Broker) Logout(ctx context.Context, uid int, id string) (credential.LogoutResult, error) {
	had, old, err := b.forget(uid, id)
	res := credential.LogoutResult{SignedOut: had}
	if !had || old == nil {
		return res, err
	}
	b.mu.Lock()
	in, ferr := b.find(id)
	b.mu.Unlock()
	if ferr != nil || in.cfg.RevocationURL == "" {
		return res, err
	}
	tok, hint := old.refresh, "refresh_token"
	var buf *secmem.Buffer
	var oerr error
	switch {
	case tok != nil:
		buf, oerr = secmem.Open(tok)
	case old.access != nil:
		hint = "access_token"
		buf, oerr = old.access.Open()
	default:
		return res, err
	}
	if oerr != nil {
		res.RevocationError = oerr.Error()
		return res, err
	}
	rerr := b.revoke(ctx, in, buf, hint)
	if rerr != nil {
		res.RevocationError = rerr.Error()
		b.log.Warn("revocation failed; the tokens are forgotten here but may stay valid at the provider", "uid", uid,
			"integration", in.cfg.Name, "guid", in.cfg.GUID.String(), "err", rerr)
	} else {
		res.Revoked = true
		b.log.Info("revoked at the provider", "uid", uid, "integration", in.cfg.Name, "guid", in.cfg.GUID.String(), "token", hint)
	}
	return res, err
}

// revoke posts an RFC 7009 revocation request for the token in tok, which
// it destroys.
func (b *Broker) revoke(ctx context.Context, in *integration, tok *secmem.Buffer, hint string) error {
	defer tok.Destroy()
	secret, err := secmem.Open(in.secret)
	if err != nil {
		return err
	}
	defer secret.Destroy()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
	defer cancel()
	form := url.Values{"token": {string(tok.Bytes())}, "token_type_hint": {hint}}
	post := in.cfg.AuthStyle == config.AuthStylePost
	if post { // the integration's auth_style, as at the token endpoint
		form.Set("client_id", in.cfg.ClientID)
		form.Set("client_secret", string(secret.Bytes()))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.cfg.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if !post {
		// client_secret_basic, with the RFC 6749 §2.3.1 form encoding.
		req.SetBasicAuth(url.QueryEscape(in.cfg.ClientID), url.QueryEscape(string(secret.Bytes())))
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return classify(ctx, err, b.timeout, "revocation endpoint")
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return fmt.Errorf("revocation endpoint answered HTTP %d, a redirect, which oauthfs does not follow", resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revocation endpoint answered HTTP %d", resp.StatusCode)
	}
	return nil
}
