// Local OpenID Connect provider for ekklesia's dev/test stack. NOT FOR PRODUCTION.
//
//   node provider.mjs            (normally started by infra/local/oidc-up.sh)
//
// Built on the certified `oidc-provider` package. It serves discovery, JWKS, the
// authorization endpoint and the token endpoint for ONE confidential client and
// has no login UI: every authorization request is approved automatically for the
// account named by its `login_hint` parameter (a 10-digit kennitala).
//
//   issuer         $OIDC_ISSUER (default http://127.0.0.1:$OIDC_PORT, port 8090)
//   client         $OIDC_CLIENT_ID / $OIDC_CLIENT_SECRET, client_secret_post,
//                  response_type code, grant authorization_code, PKCE S256 required
//   redirect_uris  $OIDC_REDIRECT_URI and http://localhost:8082/v1/auth/oidc/redirect
//   id_token       RS256 with a fresh RSA key per start (new `kid` every start);
//                  with scope "openid profile" it carries `national_id` (= sub =
//                  login_hint) and `name`, plus the request's `nonce`.
//
// Everything (sessions, codes, grants) lives in memory and is lost on restart.
// Exits cleanly on SIGTERM/SIGINT.
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider, { interactionPolicy } from 'oidc-provider';

const log = (msg) => console.log(`${new Date().toISOString()} [oidc] ${msg}`);
const fail = (msg) => {
  console.error(`${new Date().toISOString()} [oidc] ERROR: ${msg}`);
  process.exit(1);
};

// --- configuration (same defaults as infra/local/env.sh) ------------------------
const env = (name, fallback) => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : v;
};
const port = Number(env('OIDC_PORT', '8090'));
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`OIDC_PORT must be a TCP port, got '${process.env.OIDC_PORT}'`);
const issuer = env('OIDC_ISSUER', `http://127.0.0.1:${port}`).replace(/\/+$/, '');
const clientId = env('OIDC_CLIENT_ID', 'ekklesia-local');
const clientSecret = env('OIDC_CLIENT_SECRET', 'local-only-secret');
const redirectUri = env('OIDC_REDIRECT_URI', 'http://127.0.0.1:8082/v1/auth/oidc/redirect');
const redirectUris = [...new Set([redirectUri, 'http://localhost:8082/v1/auth/oidc/redirect'])];

let issuerUrl;
try {
  issuerUrl = new URL(issuer);
} catch {
  fail(`OIDC_ISSUER is not a URL: '${issuer}'`);
}
if (issuerUrl.protocol !== 'http:' || issuerUrl.pathname !== '/' || issuerUrl.search) {
  fail(`OIDC_ISSUER must look like http://HOST:PORT (no path), got '${issuer}'`);
}
if (Number(issuerUrl.port || 80) !== port) {
  log(`WARNING: OIDC_ISSUER ${issuer} names port ${issuerUrl.port || 80} but the provider listens on OIDC_PORT ${port}`);
}
const listenHost = issuerUrl.hostname.replace(/^\[(.*)\]$/, '$1');

// A kennitala: 10 digits (DDMMYY + 3 digits + check digit + century). Only the
// shape is checked here, so tests can use any 10-digit id they like.
const KENNITALA = /^[0-9]{10}$/;

// --- signing key: RSA 2048, RS256, kid = RFC 7638 thumbprint -----------------------
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = privateKey.export({ format: 'jwk' });
const kid = createHash('sha256')
  .update(JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n }))
  .digest('base64url');
const signingKey = { ...jwk, kid, alg: 'RS256', use: 'sig' };

// --- accounts: anyone whose id is a kennitala ---------------------------------
async function findAccount(_ctx, id) {
  if (!KENNITALA.test(id)) return undefined;
  return {
    accountId: id,
    async claims() {
      return { sub: id, national_id: id, name: `Test User ${id}` };
    },
  };
}

// Log in again when login_hint names a different account than the session's
// (e.g. curl reusing a cookie jar), instead of silently reusing the old account.
const { Check, base } = interactionPolicy;
const policy = base();
policy.get('login').checks.push(new Check(
  'login_hint_changed',
  'login_hint names a different account than the current session',
  (ctx) => {
    const hint = ctx.oidc.params.login_hint;
    const current = ctx.oidc.session.accountId;
    return Boolean(hint && current && hint !== current);
  },
));

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_post',
    response_types: ['code'],
    grant_types: ['authorization_code'],
    redirect_uris: redirectUris,
    id_token_signed_response_alg: 'RS256',
  }],
  responseTypes: ['code'],
  scopes: ['openid', 'profile'],
  pkce: { methods: ['S256'], required: () => true },
  jwks: { keys: [signingKey] },
  // Put the scope's claims (national_id, name) into the id_token itself, not only
  // into the userinfo response.
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    profile: ['name', 'national_id'],
  },
  findAccount,
  features: { devInteractions: { enabled: false } },
  interactions: {
    policy,
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  // Errors the provider cannot redirect back to the client (unknown client_id,
  // unregistered redirect_uri, ...) as JSON instead of an HTML page.
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

provider.on('server_error', (_ctx, err) => log(`server_error: ${err.stack || err}`));
for (const event of ['authorization.error', 'grant.error', 'introspection.error', 'userinfo.error', 'jwks.error', 'discovery.error']) {
  provider.on(event, (_ctx, err) => log(`${event}: ${err.name}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`));
}
provider.on('grant.success', (ctx) => log(`token issued to ${ctx.oidc.client?.clientId} for account ${ctx.oidc.entities.Account?.accountId}`));

// --- auto-approving interaction: /interaction/:uid ----------------------------------
function sendJson(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`${JSON.stringify(body)}\n`);
}

async function interaction(req, res) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    // SessionNotFound: the _interaction cookie is missing (cookies not sent back)
    // or the interaction expired (1 hour) or the provider restarted.
    return sendJson(res, 400, {
      error: 'invalid_request',
      error_description: `interaction not found: ${err.error_description || err.message}; send back the cookies set by the authorization endpoint`,
    });
  }
  const { prompt, params, session, grantId } = details;
  const hint = params.login_hint;

  if (hint === undefined || hint === '') {
    return sendJson(res, 400, {
      error: 'invalid_request',
      error_description: 'login_hint is required: this local provider has no login page, pass the account\'s 10-digit kennitala as login_hint',
    });
  }
  if (!KENNITALA.test(hint)) {
    return sendJson(res, 400, {
      error: 'invalid_request',
      error_description: `login_hint must be a 10-digit kennitala (digits only), got '${hint}'`,
    });
  }

  switch (prompt.name) {
    case 'login':
      log(`interaction ${details.uid}: login ${hint} (client ${params.client_id})`);
      return provider.interactionFinished(req, res, { login: { accountId: hint } }, { mergeWithLastSubmission: false });
    case 'consent': {
      // Grant exactly what the request asked for and the policy found missing.
      const grant = grantId
        ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
      if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
      if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
      if (missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      const id = await grant.save();
      log(`interaction ${details.uid}: consent for ${session.accountId}: scope '${missingOIDCScope?.join(' ') ?? ''}'`);
      return provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
    }
    default:
      return sendJson(res, 501, { error: 'server_error', error_description: `prompt '${prompt.name}' is not supported by the local provider` });
  }
}

// --- HTTP server ----------------------------------------------------------------
const providerCallback = provider.callback();
const server = createServer((req, res) => {
  const started = process.hrtime.bigint();
  const path = (req.url || '/').split('?')[0]; // never log query strings (codes, secrets)
  res.on('finish', () => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    log(`${req.method} ${path} -> ${res.statusCode} (${ms.toFixed(1)} ms)`);
  });
  if (/^\/interaction\/[^/]+$/.test(path)) {
    if (req.method !== 'GET') return sendJson(res, 405, { error: 'invalid_request', error_description: 'use GET' });
    return interaction(req, res).catch((err) => {
      log(`interaction failed: ${err.stack || err}`);
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err.message || err) });
      else res.destroy();
    });
  }
  return providerCallback(req, res);
});

server.on('error', (err) => fail(`cannot listen on ${listenHost}:${port}: ${err.message}`));
server.listen(port, listenHost, () => {
  log(`oidc-provider up: issuer ${issuer} (listening on ${listenHost}:${port}), node ${process.version}, pid ${process.pid}`);
  log(`client ${clientId} (client_secret_post, PKCE S256 required), redirect_uris ${redirectUris.join(' ')}`);
  log(`id_token RS256 kid ${kid}; discovery ${issuer}/.well-known/openid-configuration`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal} received, shutting down`);
  const force = setTimeout(() => {
    log('connections still open after 5 s, exiting anyway');
    process.exit(0);
  }, 5000);
  force.unref();
  server.close(() => {
    log('stopped');
    process.exit(0);
  });
  server.closeIdleConnections();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
