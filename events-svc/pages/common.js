// What both pages share: the configuration events-svc serves, JSON calls that return problem
// details instead of throwing, and text output that never interprets HTML.
"use strict";

const Ekklesia = (() => {
  let config = null;

  async function loadConfig() {
    if (!config) {
      const r = await fetch("/pages/config.json", { cache: "no-store" });
      config = await r.json();
    }
    return config;
  }

  // One HTTP call. Resolves with {status, body, retryAfter}; status 0 when nothing answered.
  async function call(base, path, { method = "GET", bearer, body, headers = {} } = {}) {
    const h = { ...headers };
    if (bearer) h.Authorization = "Bearer " + bearer;
    if (body !== undefined) h["Content-Type"] = "application/json";
    try {
      const r = await fetch(base + path, {
        method, headers: h, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      let parsed = null;
      try { parsed = await r.json(); } catch (_) { parsed = null; }
      const ra = parseInt(r.headers.get("Retry-After") || "", 10);
      return { status: r.status, body: parsed, retryAfter: Number.isFinite(ra) ? ra : null };
    } catch (_) {
      return { status: 0, body: null, retryAfter: null };
    }
  }

  // The problem's slug: the last segment of its `type`.
  function slug(res) {
    const t = res.body && typeof res.body.type === "string" ? res.body.type : "";
    return t.slice(t.lastIndexOf("/") + 1);
  }

  function detail(res) {
    if (res.status === 0) return "The service did not answer. Check your connection.";
    return (res.body && res.body.detail) || ("HTTP " + res.status);
  }

  // Build an element; strings become text nodes, never markup.
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === false || v === null || v === undefined) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function say(node, text, kind) {
    node.hidden = false;
    node.className = "status" + (kind ? " " + kind : "");
    node.textContent = text;
  }

  // Dev login (local profile only; members-fn answers 404 elsewhere).
  async function devLogin(nationalId) {
    const cfg = await loadConfig();
    return call(cfg.members_url, "/v1/auth/dev-login", {
      method: "POST", body: { national_id: nationalId.replace(/[\s-]/g, "") },
    });
  }

  function loginProblem(res) {
    if (res.status === 404) return "Dev login is not enabled on this system.";
    if (res.status === 403) return "You are not in the member registry.";
    if (res.status === 400) return "That is not a valid kennitala.";
    if (res.status === 409) return "You are a member of several organisations; this page cannot choose yet.";
    return "Login failed: " + detail(res);
  }

  // The real login: members-fn starts it at the identity provider and, once it succeeds, sends
  // the browser back to this very page with the session in the URL's fragment (never sent to
  // a server). members-fn accepts only the pages of the origins it is configured with.
  async function oidcLogin() {
    const cfg = await loadConfig();
    const back = location.origin + location.pathname;
    location.assign(cfg.members_url + "/v1/auth/oidc/start?return_to=" + encodeURIComponent(back));
  }

  // The session members-fn handed back in the fragment, if any: taken out of the URL at once
  // (history.replaceState: not in the address bar, history or a bookmark), then memory only.
  function takeHandedSession() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("session");
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
    return token || null;
  }

  // What a page shows about the session: its organisation and roles (the token's own claims;
  // the API checks them again on every call).
  function sessionClaims(token) {
    try {
      const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(b64));
    } catch (_) {
      return {};
    }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  return {
    loadConfig, call, slug, detail, el, say, devLogin, loginProblem, sleep,
    oidcLogin, takeHandedSession, sessionClaims,
  };
})();
