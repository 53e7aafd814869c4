// A real OAuth 2.0 / OpenID Connect server for oauthfs's conformance tests:
// panva's oidc-provider with PKCE required, refresh-token rotation, short
// access tokens and RFC 7009 revocation, on 127.0.0.1.
//
// The device authorization grant (RFC 8628) is on, with oidc-provider's
// own verification pages (user code, confirmation, login, consent).
//
// Resource indicators (RFC 8707) are on: https://api.example.test is a
// resource server whose access tokens are RS256 JWTs with that audience
// and the scope api:read; a client asks for it by naming it in its
// authorization request, and then for its tokens at the token endpoint.
//
// Environment: PORT, REDIRECT_URI, CLIENT_SECRET, ACCESS_TTL (seconds),
// DEVICE_TTL (seconds a device code lasts, default 600), DEVICE_INTERVAL
// (seconds; when set, device authorization answers carry it as
// "interval"), SLOW_DOWN_ONCE (when set, the first authorization_pending
// answer is slow_down instead).
// Prints "ready" on stdout once listening. Two test-only routes report
// what the provider itself saw:
//   GET  /test/stats       {"refreshes": n, "active_refresh_tokens": n,
//                           "device_polls": [ms since the epoch, ...]}
//   POST /test/revoke-all  revokes every refresh token (as an admin would)
//   GET  /test/evil?target=URL  a page of another site that posts an
//                          empty form to URL as soon as it loads
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

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
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  clockTolerance: 0,
  rotateRefreshToken: true,
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    deviceFlow: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => (oneOf ? oneOf[0] : undefined),
      useGrantedResource: () => false,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== 'https://api.example.test') throw new errors.InvalidTarget();
        return { scope: 'api:read', audience: resource, accessTokenFormat: 'jwt', accessTokenTTL: Number(process.env.ACCESS_TTL || 10), jwt: { sign: { alg: 'RS256' } } };
      },
    },
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
    DeviceCode: Number(process.env.DEVICE_TTL || 600),
  },
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
});

let refreshes = 0;
provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params.grant_type === 'refresh_token') refreshes += 1;
});

// Device sign-ins: the interval the provider asks for, one slow_down, and
// when each device_code token request came.
const devicePolls = [];
let slowDown = Boolean(process.env.SLOW_DOWN_ONCE);
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/device/auth' && ctx.status === 200 && process.env.DEVICE_INTERVAL) {
    ctx.body = { ...ctx.body, interval: Number(process.env.DEVICE_INTERVAL) };
  }
  if (ctx.path === '/token' && ctx.oidc?.params?.grant_type === 'urn:ietf:params:oauth:grant-type:device_code') {
    devicePolls.push(Date.now());
    if (slowDown && ctx.body?.error === 'authorization_pending') {
      slowDown = false;
      ctx.status = 400;
      ctx.body = { error: 'slow_down', error_description: 'polling too quickly' };
    }
  }
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
    res.end(JSON.stringify({ refreshes, active_refresh_tokens: activeRefreshTokens(), device_polls: devicePolls }));
    return;
  }
  if (req.url.startsWith('/test/evil?')) {
    const target = new URL(req.url, 'http://x').searchParams.get('target');
    const esc = (v) => v.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
    res.setHeader('Content-Type', 'text/html');
    res.end(`<!doctype html><title>Another site</title><form method="post" action="${esc(target)}"><button>Win a prize</button></form>
<script>document.forms[0].submit()</script>`);
    return;
  }
  if (req.url === '/test/revoke-all' && req.method === 'POST') {
    stores.get('RefreshToken')?.clear();
    res.end('revoked\n');
    return;
  }
  callback(req, res);
}).listen(port, '127.0.0.1', () => console.log('ready'));
