// The meeting console. Admins: create, open and close elections, turnout while open, the tally
// once sealed with its "final" mark. Platform operators: the queue flag (with a confirmation
// step) and its audited history, live counters (the vote path per election, the worker, each
// service's readiness, the mode each ingest is in) and a votes/s chart. The page asks the API and
// shows what it answers: a refusal (403) is the server's decision, shown as such.
"use strict";

(() => {
  const { call, slug, detail, el, say, sleep } = Ekklesia;
  const $ = (id) => document.getElementById(id);
  let session = null;
  const rates = []; // [seconds, votes/s] of the last five minutes
  let lastCount = null;

  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const res = await Ekklesia.devLogin($("national-id").value);
    if (res.status !== 200) return say($("login-status"), Ekklesia.loginProblem(res), "bad");
    loggedIn(res.body.session_token);
  });

  function loggedIn(token) {
    session = token;
    const claims = Ekklesia.sessionClaims(token);
    $("login").hidden = true;
    $("who").hidden = false;
    $("who").textContent = `Logged in to ${claims.org} (roles: ${(claims.roles || []).join(", ")}).`;
    $("admin").hidden = false;
    $("ops").hidden = false;
    adminLoop();
    opsLoop();
  }

  $("oidc-login").addEventListener("click", () => Ekklesia.oidcLogin());

  // --- admin -------------------------------------------------------------------------------

  async function adminLoop() {
    for (;;) {
      const stop = await refreshElections();
      if (stop) return;
      await sleep(2000);
    }
  }

  // Returns true when the server refuses this member the admin view (nothing more to poll).
  async function refreshElections() {
    const res = await call("", "/v1/elections?status=all", { bearer: session });
    if (res.status === 403) {
      say($("admin-status"), "Not allowed: the server refuses election administration to members without the admin role.", "bad");
      $("admin-actions").hidden = true;
      return true;
    }
    if (res.status !== 200) {
      say($("admin-status"), "Could not load the elections: " + detail(res), "bad");
      return false;
    }
    $("admin-status").hidden = true;
    $("admin-actions").hidden = false;
    const rows = [];
    for (const e of res.body) rows.push(await electionRow(e));
    $("election-rows").replaceChildren(...rows);
    return false;
  }

  async function electionRow(e) {
    let figures = "";
    if (e.status !== "draft") {
      const r = await call("", `/v1/elections/${e.id}/results`, { bearer: session });
      if (r.status === 200) figures = resultsCell(e, r.body);
      else figures = "results unavailable: " + detail(r);
    }
    const action = e.status === "draft"
      ? el("button", { type: "button", "data-action": "open", onclick: () => transition(e, "open") }, "Open")
      : e.status === "open"
        ? el("button", { type: "button", "data-action": "close", onclick: () => transition(e, "close") }, "Close")
        : "";
    return el("tr", { "data-election": e.id, "data-status": e.status },
      el("td", {}, el("strong", {}, e.title), el("br"), e.question),
      el("td", { class: "status-cell" }, e.status),
      el("td", { class: "results" }, figures),
      el("td", {}, action));
  }

  function resultsCell(e, r) {
    if (!r.sealed) {
      // No tally before the seal: only how many voted.
      const what = e.status === "open" ? "Turnout so far" : "Closed, counting";
      return el("span", {}, `${what}: ${r.total}`);
    }
    const tally = Object.entries(r.tally).map(([id, n]) => {
      const o = e.options.find((x) => x.id === id);
      return el("li", {}, `${o ? o.label : id}: ${n}`);
    });
    const mark = r.final
      ? el("span", { class: "badge final" }, "FINAL")
      : el("span", { class: "badge", style: null }, "NOT FINAL: " + (r.integrity_problem || "integrity check failed"));
    return el("div", {}, mark, ` ${r.total} ballots`, el("ul", { class: "tally" }, tally));
  }

  async function transition(e, to) {
    const res = await call("", `/v1/elections/${e.id}/${to}`, { method: "POST", bearer: session });
    if (res.status !== 200) say($("admin-status"), `Could not ${to} “${e.title}”: ` + detail(res), "bad");
    await refreshElections();
  }

  $("create-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const labels = $("new-options").value.split("\n").map((s) => s.trim()).filter(Boolean);
    const body = {
      title: $("new-title").value.trim(), question: $("new-question").value.trim(),
      kind: $("new-kind").value, max_choices: Number($("new-max").value),
      options: labels.map((label, i) => ({ id: "o" + (i + 1), label })),
      opens_at: null, closes_at: null,
    };
    const res = await call("", "/v1/elections", { method: "POST", bearer: session, body });
    if (res.status !== 201) return say($("admin-status"), "Not created: " + detail(res), "bad");
    $("create-form").reset();
    $("create").open = false;
    await refreshElections();
  });

  // --- ops ---------------------------------------------------------------------------------

  async function opsLoop() {
    for (;;) {
      const flag = await call("", "/v1/ops/queue-mode", { bearer: session });
      if (flag.status === 403) {
        say($("ops-status"), "Not allowed: the server refuses the queue flag and live counters to anyone but platform operators.", "bad");
        $("ops-actions").hidden = true;
        return;
      }
      if (flag.status === 200) showFlag(flag.body);
      const live = await call("", "/v1/ops/live", { bearer: session });
      if (live.status === 200) showLive(live.body);
      $("ops-actions").hidden = false;
      await sleep(1000);
    }
  }

  let wanted = null;
  function showFlag(state) {
    const on = state.enabled !== false; // never set: ingest's default, queue mode
    $("flag").textContent = on ? "Queue mode is ON (votes go through Pub/Sub)." : "Queue mode is OFF (direct mode: one transaction per vote).";
    $("flip").textContent = on ? "Switch to direct mode…" : "Switch to queue mode…";
    wanted = !on;
    $("history").replaceChildren(...state.recent_changes.map((c) => el("tr", {},
      el("td", {}, new Date(c.changed_at).toLocaleString()),
      el("td", {}, `${c.old_enabled === null ? "unset" : c.old_enabled ? "on" : "off"} → ${c.new_enabled ? "on" : "off"}`),
      el("td", {}, c.changed_by), el("td", {}, c.database_user || ""))));
  }

  $("flip").addEventListener("click", () => {
    $("confirm-text").textContent = wanted
      ? "Switch every ingest to queue mode? Votes will be queued and committed by the worker."
      : "Switch every ingest to direct mode? Each vote then commits in its own transaction and a busy database answers 503.";
    $("confirm").hidden = false;
    $("confirm-yes").focus();
  });
  $("confirm-no").addEventListener("click", () => { $("confirm").hidden = true; $("flip").focus(); });
  $("confirm-yes").addEventListener("click", async () => {
    $("confirm").hidden = true;
    const res = await call("", "/v1/ops/queue-mode", { method: "PUT", bearer: session, body: { enabled: wanted } });
    if (res.status === 200) {
      showFlag(res.body);
      say($("ops-status"), "Changed. Every ingest follows within its poll interval.", "ok");
    } else {
      say($("ops-status"), (slug(res) === "queue-mode-changed-recently" ? "Changed too recently: " : "Not changed: ") + detail(res), "bad");
    }
  });

  function showLive(live) {
    const now = Date.now() / 1000;
    if (live.votes_accepted !== null && lastCount) {
      const dt = now - lastCount[0];
      if (dt > 0) rates.push([now, Math.max(0, (live.votes_accepted - lastCount[1]) / dt)]);
    }
    if (live.votes_accepted !== null) lastCount = [now, live.votes_accepted];
    while (rates.length && rates[0][0] < now - 300) rates.shift();
    const current = rates.length ? rates[rates.length - 1][1] : 0;
    const counter = (name, value, source) => el("div", { class: "counter", "data-counter": name },
      el("b", {}, value), name, source ? el("small", { class: "muted" }, " (" + source + ")") : null);
    $("counters").replaceChildren(
      counter("votes/s", current.toFixed(1)),
      counter("votes accepted", live.votes_accepted ?? "?", "ingest"),
      counter("votes refused", live.votes_refused ?? "?", "ingest"),
      ...Object.entries(live.ready).map(([svc, ok]) => counter(svc, ok ? "ready" : "NOT READY")));
    drawChart(now);
    showIngests(live.ingests);
    showVotePath(live, now, counter);
  }

  // Which mode each live ingest instance is in (what it last reported), so a flip is seen to
  // reach every instance, not only the stored flag.
  function showIngests(ingests) {
    if (!ingests) return ($("ingest-modes").textContent = "Ingest instances: the database did not answer.");
    const modes = ingests.map((i) => i.queue_mode === true ? "queue" : i.queue_mode === false ? "direct" : "not reported");
    const counts = {};
    for (const m of modes) counts[m] = (counts[m] || 0) + 1;
    const parts = Object.entries(counts).map(([m, n]) => `${n} in ${m} mode`);
    $("ingest-modes").textContent = `Ingest instances (${ingests.length} live): ${parts.join(", ") || "none"}.`;
  }

  const age = (s) => (s === null || s === undefined ? "–" : s < 90 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`);
  let lastLag = null; // [sum, count] of the worker's accept→commit histogram at the last poll

  function showVotePath(live, now, counter) {
    const t = live.totals, w = live.worker;
    let lag = "–";
    if (w) {
      if (lastLag && w.commit_lag_count > lastLag[1]) {
        lag = age((w.commit_lag_seconds_sum - lastLag[0]) / (w.commit_lag_count - lastLag[1]));
      } else if (w.commit_lag_count > 0 && !lastLag) {
        lag = age(w.commit_lag_seconds_sum / w.commit_lag_count);
      } else {
        lag = "idle";
      }
      lastLag = [w.commit_lag_seconds_sum, w.commit_lag_count];
    }
    $("vote-path").replaceChildren(
      counter("accepted", t ? t.accepted : "?", "ledger"),
      counter("recorded", t ? t.recorded : "?", "database"),
      counter("undecided", t ? t.undecided : "?", "database"),
      counter("oldest undecided", t ? age(t.oldest_undecided_seconds) : "?", "database"),
      counter("commit lag", w ? lag : "?", "worker"),
      counter("dead letters", w ? w.dead_letter_votes : "?", "worker"),
      counter("rejected", w ? w.rejected : "?", "worker"),
      counter("undecodable", w ? w.undecodable : "?", "worker"));
    $("live-elections").replaceChildren(...(live.elections || []).map((e) => el("tr", { "data-election": e.election_id },
      el("td", {}, e.org_id, el("br"), el("code", {}, e.election_id.slice(0, 8))),
      el("td", {}, e.status === "open" ? "open" : "closed, awaiting seal"),
      el("td", { "data-counter": "accepted" }, String(e.accepted)),
      el("td", { "data-counter": "recorded" }, String(e.recorded)),
      el("td", { "data-counter": "undecided" }, `${e.undecided} (${age(e.oldest_undecided_seconds)})`))));
  }

  // Votes/s over the last five minutes as an SVG polyline (no library).
  function drawChart(now) {
    const svg = $("chart");
    const max = Math.max(1, ...rates.map((r) => r[1]));
    const points = rates.map(([t, v]) => `${(300 - (now - t)).toFixed(1)},${(78 - (v / max) * 74).toFixed(1)}`).join(" ");
    const ns = "http://www.w3.org/2000/svg";
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points);
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#0b4f8a");
    line.setAttribute("stroke-width", "2");
    const axis = document.createElementNS(ns, "line");
    for (const [k, v] of Object.entries({ x1: 0, y1: 78, x2: 300, y2: 78, stroke: "#444" })) axis.setAttribute(k, v);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "2"); label.setAttribute("y", "12"); label.setAttribute("font-size", "10");
    label.textContent = `max ${max.toFixed(1)} votes/s`;
    svg.replaceChildren(axis, line, label);
  }

  // Back from the identity provider: the session members-fn handed back in the fragment.
  const handed = Ekklesia.takeHandedSession();
  if (handed) loggedIn(handed);
})();
