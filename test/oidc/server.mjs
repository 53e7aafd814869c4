// A real OAuth 2.0 / OpenID Connect server for oauthfs's conformance tests:
// panva's oidc-provider with PKCE required, refresh-token rotation, short
// access tokens and RFC 7009 revocation, on 127.0.0.1.
//
// Environment: PORT, REDIRECT_URI, CLIENT_SECRET, ACCESS_TTL (seconds).
// Prints "ready" on stdout once listening. Two test-only routes report
// what the provider itself saw:
//   GET  /test/stats       {"refreshes": n, "active_refresh_tokens": n}
//   POST /test/revoke-all  revokes every refresh token (as an admin would)
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const stores = new Map();

// MapAdapter is oidc-provider's storage interface over plain Maps, so the
// test routes can see and revoke refresh tokens.
class MapAdapter {
  constructor(name) {
    if (!stores.has(name)) stores.set(name, new Map());
    this.s = stores.get(name);
  }
  async upsert(id, payload) { this.s.set(id, { ...payload }); }
  async find(id) { return this.s.get(id); }
  async findByUid(uid) { for (const v of this.s.values()) if (v.uid === uid) return v; return undefined; }
  async findByUserCode(code) { for (const v of this.s.values()) if (v.userCode === code) return v; return undefined; }
  async consume(id) { const v = this.s.get(id); if (v) v.consumed = Math.floor(Date.now() / 1000); }
  async destroy(id) { this.s.delete(id); }
  async revokeByGrantId(grantId) { for (const [k, v] of this.s) if (v.grantId === grantId) this.s.delete(k); }
}

const provider = new Provider(`http://127.0.0.1:${port}`, {
  adapter: MapAdapter,
  clients: [{
    client_id: 'oauthfs',
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  clockTolerance: 0,
  rotateRefreshToken: true,
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
  },
  scopes: ['openid', 'offline_access'],
  claims: { openid: ['sub'] },
  ttl: {
    AccessToken: Number(process.env.ACCESS_TTL || 10),
    AuthorizationCode: 60,
    RefreshToken: 3600,
    Grant: 3600,
    Session: 3600,
    Interaction: 600,
    IdToken: 3600,
  },
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
});

let refreshes = 0;
provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params.grant_type === 'refresh_token') refreshes += 1;
});

const activeRefreshTokens = () => {
  const now = Math.floor(Date.now() / 1000);
  let n = 0;
  for (const v of (stores.get('RefreshToken') || new Map()).values()) {
    if (!v.consumed && (!v.exp || v.exp > now)) n += 1;
  }
  return n;
};

const callback = provider.callback();
http.createServer((req, res) => {
  if (req.url === '/test/stats') {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ refreshes, active_refresh_tokens: activeRefreshTokens() }));
    return;
  }
  if (req.url === '/test/revoke-all' && req.method === 'POST') {
    stores.get('RefreshToken')?.clear();
    res.end('revoked\n');
    return;
  }
  callback(req, res);
}).listen(port, '127.0.0.1', () => console.log('ready'));
