// The voter's page. The session and the voting token live in these variables only: never in
// storage, cookies or the URL, so closing the tab forgets them. The page sends the API only
// what it needs: the session to events-svc, the voting token and the choices to ingest.
"use strict";

(() => {
  const { call, slug, detail, el, say, sleep } = Ekklesia;
  const $ = (id) => document.getElementById(id);
  // The seed's client policy for 503 and 429: at most 2 retries, all within 3 s, with jitter,
  // never sooner than Retry-After.
  const RETRIES = 2, BUDGET_MS = 3000, JITTER_MS = 250;

  let cfg = null;
  let session = null; // members-fn's session token
  let election = null; // the election being voted on
  let submission = null; // {token, key, choices}: a retry resends exactly this

  function show(id) {
    for (const s of ["elections", "ballot", "outcome"]) $(s).hidden = s !== id;
  }

  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    cfg = await Ekklesia.loadConfig();
    $("login-button").disabled = true;
    say($("login-status"), "Logging in…");
    const res = await Ekklesia.devLogin($("national-id").value);
    $("login-button").disabled = false;
    if (res.status !== 200) return say($("login-status"), Ekklesia.loginProblem(res), "bad");
    session = res.body.session_token;
    $("national-id").value = "";
    $("login").hidden = true;
    await listElections();
  });

  $("oidc-login").addEventListener("click", () => Ekklesia.oidcLogin());

  // Back from the identity provider: the session members-fn handed back in the fragment.
  (async () => {
    const handed = Ekklesia.takeHandedSession();
    if (!handed) return;
    cfg = await Ekklesia.loadConfig();
    session = handed;
    $("login").hidden = true;
    await listElections();
  })();

  async function listElections() {
    show("elections");
    const list = $("election-list");
    list.replaceChildren();
    $("elections-status").textContent = "Loading…";
    const res = await call("", "/v1/elections", { bearer: session });
    if (res.status !== 200) {
      $("elections-status").textContent = "Could not load the elections: " + detail(res);
      return;
    }
    $("elections-status").textContent = res.body.length ? "" : "No election is open now.";
    for (const e of res.body) {
      const item = el("li", { "data-election": e.id }, el("strong", {}, e.title), " – ", e.question, " ");
      if (e.token_issued) {
        // A second visit: the voting token was issued before. Which choice was made is not
        // known here and is never shown.
        item.append(el("span", { class: "badge" }, "Already voted"));
      } else {
        item.append(el("button", { type: "button", onclick: () => openBallot(e) }, "Vote"));
      }
      list.append(item);
    }
  }
  $("refresh").addEventListener("click", listElections);

  function openBallot(e) {
    election = e;
    submission = null;
    $("ballot-title").textContent = e.title;
    $("ballot-question").textContent = e.question;
    const box = $("ballot-options");
    box.replaceChildren();
    const max = e.max_choices;
    if (e.kind === "single") {
      $("ballot-hint").textContent = "Choose one.";
      e.options.forEach((o, i) => box.append(el("label", { class: "choice" },
        el("input", { type: "radio", name: "choice", value: o.id, id: "opt-" + i }), o.label)));
    } else if (e.kind === "multiple") {
      $("ballot-hint").textContent = `Choose up to ${max}.`;
      e.options.forEach((o, i) => box.append(el("label", { class: "choice" },
        el("input", { type: "checkbox", name: "choice", value: o.id, id: "opt-" + i, onchange: enforceMax }), o.label)));
    } else {
      $("ballot-hint").textContent = `Rank up to ${max} options: 1 is your first preference.`;
      e.options.forEach((o, i) => {
        const select = el("select", { "data-option": o.id, id: "opt-" + i, "aria-label": "Rank for " + o.label, onchange: enforceMax },
          el("option", { value: "" }, "–"), ...Array.from({ length: max }, (_, r) => el("option", { value: String(r + 1) }, String(r + 1))));
        box.append(el("label", { class: "choice" }, select, o.label));
      });
    }
    $("choice-status").textContent = "";
    show("ballot");
    const first = box.querySelector("input, select");
    if (first) first.focus();
  }

  // The choices as the API wants them, or a message saying what is wrong with them.
  function choices() {
    const box = $("ballot-options");
    if (election.kind === "ranked") {
      const ranked = [...box.querySelectorAll("select")].filter((s) => s.value)
        .map((s) => ({ id: s.dataset.option, rank: Number(s.value) }));
      const ranks = ranked.map((r) => r.rank);
      if (new Set(ranks).size !== ranks.length) return { error: "Each rank can be given once." };
      ranked.sort((a, b) => a.rank - b.rank);
      return { ids: ranked.map((r) => r.id) };
    }
    return { ids: [...box.querySelectorAll("input:checked")].map((i) => i.value) };
  }

  // max_choices is enforced before anything is sent: extra boxes are disabled.
  function enforceMax() {
    const { ids, error } = choices();
    const full = ids && ids.length >= election.max_choices;
    if (election.kind === "multiple") {
      for (const i of $("ballot-options").querySelectorAll("input")) i.disabled = full && !i.checked;
    }
    $("choice-status").textContent = error || (full ? `You have chosen the most allowed (${election.max_choices}).` : "");
  }

  $("back").addEventListener("click", listElections);
  $("done").addEventListener("click", listElections);

  $("ballot-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const { ids, error } = choices();
    if (error) return ($("choice-status").textContent = error);
    if (!ids.length) return ($("choice-status").textContent = "Choose before casting your vote.");
    if (ids.length > election.max_choices) {
      return ($("choice-status").textContent = `Choose at most ${election.max_choices}.`);
    }
    show("outcome");
    $("retry").hidden = true;
    $("done").hidden = true;
    $("receipt-line").hidden = true;
    const status = $("vote-status");
    say(status, "Getting your voting token…");
    const res = await call("", `/v1/elections/${election.id}/token`, { method: "POST", bearer: session });
    if (res.status !== 201) {
      $("done").hidden = false;
      if (res.status === 409) return say(status, "You have already voted in this election.", "bad");
      if (slug(res) === "election-not-open") return say(status, "This election is closed. Your vote was not cast.", "bad");
      return say(status, "Could not get a voting token: " + detail(res), "bad");
    }
    // One Idempotency-Key per submission: every retry of it sends the same key and choices,
    // so it is counted at most once and gets the same receipt.
    submission = { token: res.body.token, key: crypto.randomUUID(), choices: ids };
    await send();
  });

  $("retry").addEventListener("click", send);

  async function send() {
    const status = $("vote-status");
    $("retry").hidden = true;
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      say(status, attempt === 1 ? "Sending your vote…" : `Sending your vote (attempt ${attempt} of ${RETRIES + 1})…`);
      const res = await call(cfg.ingest_url, `/v1/elections/${election.id}/ballots`, {
        method: "POST", bearer: submission.token, body: { choices: submission.choices },
        headers: { "Idempotency-Key": submission.key },
      });
      if (res.status === 201 || res.status === 202) return follow(res.body.receipt, res.body.status);
      if (res.status === 503 || res.status === 429 || res.status === 0) {
        const wait = (res.retryAfter ?? 1) * 1000 + Math.random() * JITTER_MS;
        if (attempt <= RETRIES && Date.now() - started + wait <= BUDGET_MS) {
          say(status, `The system is busy (${res.status || "no answer"}); trying again in ${(wait / 1000).toFixed(1)} s (attempt ${attempt + 1} of ${RETRIES + 1})…`);
          await sleep(wait);
          continue;
        }
        $("retry").hidden = false;
        return say(status, "The system is busy and your vote has not been confirmed. Try again: the same vote is sent, and it counts at most once.", "bad");
      }
      $("done").hidden = false;
      if (slug(res) === "election-not-open") return say(status, "This election is closed. Your vote was not counted.", "bad");
      if (res.status === 409) return say(status, "This voting token was already used: you have already voted.", "bad");
      return say(status, "Your vote was refused: " + detail(res), "bad");
    }
  }

  // The receipt's status, live: queued until the worker decides, then recorded or rejected.
  async function follow(receipt, first) {
    submission.token = null; // spent: nothing further needs it
    $("receipt").textContent = receipt;
    $("receipt-line").hidden = false;
    $("done").hidden = false;
    let state = first;
    for (let polls = 0; ; polls++) {
      if (state === "recorded") return say($("vote-status"), "Recorded: your vote is counted.", "ok");
      if (state && state.startsWith("rejected")) return;
      say($("vote-status"), "Queued: your vote was accepted and is on its way to the ballot box…");
      await sleep(polls < 30 ? 1000 : 5000);
      const res = await call(cfg.ingest_url, "/v1/receipts:lookup", { method: "POST", body: { receipt } });
      if (res.status === 200) {
        state = res.body.status;
        if (state === "rejected") {
          say($("vote-status"), "Rejected: " + (res.body.reason || "no reason given"), "bad");
          return;
        }
      }
    }
  }
})();
