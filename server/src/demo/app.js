// Northwind Bank, the Assent demo: passkey sign-up and sign-in (with autofill), and push
// approvals with number matching, a live status, and the code fallback.
// Plain browser JavaScript: the WebAuthn JSON helpers do all the encoding.
"use strict";

const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error((data && data.detail) || response.statusText);
    error.code = data && data.code;
    error.status = response.status;
    error.body = data;
    throw error;
  }
  return data;
}

function show(id, visible) {
  $(id).hidden = !visible;
}

function authError(message) {
  $("auth-error").textContent = message || "";
  show("auth-error", Boolean(message));
}

function busy(button, on, label) {
  if (on) {
    button.dataset.label = button.innerHTML;
    button.textContent = label;
    button.disabled = true;
  } else {
    if (button.dataset.label) button.innerHTML = button.dataset.label;
    button.disabled = false;
  }
}

// --- passkeys -------------------------------------------------------------------------

const supported =
  window.PublicKeyCredential &&
  typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function" &&
  typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function";

let autofill = null; // the pending conditional (autofill) request: {controller, done}

/// Ends the autofill request and waits until the browser has let go of it, so a modal
/// request can start.
async function stopAutofill() {
  if (!autofill) return;
  const { controller, done } = autofill;
  autofill = null;
  controller.abort();
  await done;
}

/// Offers this site's passkeys in the username field's autofill; a pick signs in.
async function startAutofill() {
  await stopAutofill();
  if (!supported || !(await PublicKeyCredential.isConditionalMediationAvailable?.())) return;
  const controller = new AbortController();
  autofill = { controller, done: runAutofill(controller) };
}

async function runAutofill(controller) {
  const { signal } = controller;
  // Ceremonies last five minutes: start a fresh one before this one runs out.
  const renew = setTimeout(() => !signal.aborted && startAutofill(), 4 * 60 * 1000);
  try {
    const ceremony = await api("POST", "/demo/api/signin", {});
    if (signal.aborted) return;
    let credential;
    try {
      credential = await navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(ceremony.options.publicKey),
        mediation: "conditional",
        signal,
      });
    } catch (error) {
      // The person asked for nothing yet: an autofill request that ends is not an error.
      console.debug("passkey autofill ended:", error.name);
      return;
    }
    if (signal.aborted) return;
    autofill = null;
    await finishSignin(ceremony.ceremony_id, credential);
  } catch (error) {
    if (!signal.aborted) authError(explain(error));
  } finally {
    clearTimeout(renew);
  }
}

async function signin(event) {
  event.preventDefault();
  authError("");
  const button = $("signin-button");
  const username = $("signin-username").value.trim();
  await stopAutofill();
  busy(button, true, "Waiting for your passkey…");
  try {
    const ceremony = await api("POST", "/demo/api/signin", username ? { username } : {});
    const credential = await navigator.credentials.get({
      publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(ceremony.options.publicKey),
    });
    await finishSignin(ceremony.ceremony_id, credential);
  } catch (error) {
    authError(explain(error));
    startAutofill();
  } finally {
    busy(button, false);
  }
}

async function finishSignin(ceremonyId, credential) {
  const account = await api("POST", `/demo/api/signin/${ceremonyId}`, { credential: credential.toJSON() });
  enter(account);
}

async function signup(event) {
  event.preventDefault();
  authError("");
  await stopAutofill();
  const button = $("signup-button");
  busy(button, true, "Creating your passkey…");
  try {
    const ceremony = await api("POST", "/demo/api/signup", {
      username: $("signup-username").value,
      display_name: $("signup-name").value,
      email: $("signup-email").value || null,
    });
    const credential = await navigator.credentials.create({
      publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(ceremony.options.publicKey),
    });
    const account = await api("POST", `/demo/api/signup/${ceremony.ceremony_id}`, {
      credential: credential.toJSON(),
    });
    enter(account);
  } catch (error) {
    authError(explain(error));
  } finally {
    busy(button, false);
  }
}

function explain(error) {
  switch (error.name) {
    case "NotAllowedError":
      return "The passkey request was cancelled or timed out. Try again.";
    case "InvalidStateError":
      return "This device already has a passkey for that account: sign in instead.";
    case "SecurityError":
      return "This page's address is not allowed to use passkeys (check passkeys.origins).";
  }
  switch (error.code) {
    case "not_found":
      return "No account with that username. Check it, or create an account.";
    case "unknown_credential":
      return "That passkey is not registered with Northwind (it may have been removed).";
    case "username_taken":
      return "That username is taken. Pick another, or sign in.";
  }
  return error.message || "Something went wrong. Try again.";
}

// --- signed in --------------------------------------------------------------------------

function enter(account) {
  autofill && stopAutofill();
  show("auth", false);
  show("dashboard", true);
  show("account-bar", true);
  const name = account.display_name || account.username;
  $("account-name").textContent = account.username;
  $("greeting-name").textContent = name.split(" ")[0];
  renderAccount(account);
}

function renderAccount(account) {
  const passkeys = $("passkeys");
  passkeys.replaceChildren(
    ...account.passkeys.map((p) => {
      const item = document.createElement("li");
      const title = document.createElement("strong");
      title.textContent = p.name;
      const meta = document.createElement("span");
      meta.className = "muted";
      const used = p.last_used_at ? `last used ${new Date(p.last_used_at).toLocaleString()}` : "not used yet";
      meta.textContent = `${p.backed_up ? "Synced" : "On this device"} · added ${new Date(p.created_at).toLocaleDateString()} · ${used}`;
      item.append(title, meta);
      return item;
    }),
  );
  const phones = $("phones");
  if (account.devices.length === 0) {
    phones.innerHTML = '<p class="muted">No phone yet. Add one to approve transfers with a tap.</p>';
  } else {
    phones.replaceChildren(
      ...account.devices.map((d) => {
        const p = document.createElement("p");
        p.className = "device";
        const name = document.createElement("strong");
        name.textContent = d.name;
        const meta = document.createElement("span");
        meta.className = "muted";
        meta.textContent = `Approves transfers · added ${new Date(d.created_at).toLocaleDateString()}`;
        p.append(name, meta);
        return p;
      }),
    );
    show("enroll", false);
  }
}

async function refreshAccount() {
  try {
    renderAccount(await api("GET", "/demo/api/session"));
  } catch (_) {
    /* signed out elsewhere: the next action says so */
  }
}

async function addPhone() {
  const enrollment = await api("POST", "/demo/api/phone");
  $("enroll-qr").innerHTML = enrollment.qr_svg; // SVG made by the server from the URI
  $("enroll-uri").textContent = enrollment.uri;
  show("enroll", true);
  // Show the phone as soon as it has enrolled.
  const until = enrollment.expires_at * 1000;
  const poll = async () => {
    const account = await api("GET", "/demo/api/session").catch(() => null);
    if (account && account.devices.length > 0) return renderAccount(account);
    if (Date.now() < until && !$("enroll").hidden) setTimeout(poll, 2000);
  };
  setTimeout(poll, 2000);
}

let watching = null; // the challenge being waited on

async function transfer(event) {
  event.preventDefault();
  const button = $("transfer-button");
  busy(button, true, "Sending…");
  try {
    const challenge = await api("POST", "/demo/api/approvals", {
      amount: $("transfer-amount").value,
      payee: $("transfer-payee").value,
    });
    showApproval(challenge);
  } catch (error) {
    showApprovalError(error);
  } finally {
    busy(button, false);
  }
}

function showApproval(challenge) {
  show("approval", true);
  $("approval-id").textContent = challenge.id;
  $("approval").dataset.challengeId = challenge.id;
  const push = challenge.factor === "push";
  $("approval-title").textContent = push ? "Confirm on your phone" : "Confirm with a code";
  show("approval-push", push);
  show("approval-code", !push);
  $("approval-number").textContent = challenge.number ?? "";
  $("approval-destination").textContent = challenge.destination || "";
  $("code-input").value = "";
  const details = $("approval-details");
  details.replaceChildren(
    ...challenge.details.flatMap((d) => {
      const dt = document.createElement("dt");
      dt.textContent = d.label;
      const dd = document.createElement("dd");
      dd.textContent = d.value;
      return [dt, dd];
    }),
  );
  setStatus("pending", push ? "Waiting for your approval…" : "Enter the code we sent you.");
  watch(challenge.id);
}

function showApprovalError(error) {
  show("approval", true);
  show("approval-push", false);
  show("approval-code", false);
  $("approval-details").replaceChildren();
  const message =
    error.code === "no_factor"
      ? "Add your phone (or an email address) to confirm transfers."
      : error.code === "rate_limited"
        ? "Too many requests in a short time. Wait a few minutes."
        : error.message;
  setStatus("failed", message);
}

const FINAL = {
  approved: "Approved. Your transfer is on its way.",
  denied: "Denied on your phone. Nothing was sent.",
  fraud_reported: "Reported as fraud. We locked approvals and will be in touch.",
  expired: "The request expired. Send the transfer again.",
  cancelled: "Cancelled.",
  failed: "The confirmation failed.",
};

function setStatus(status, text) {
  const el = $("approval-status");
  el.dataset.status = status;
  el.className = `status ${status === "pending" ? "waiting" : status}`;
  $("approval-status-text").textContent = text;
}

/// Long-polls the challenge until it is decided, showing each change live.
async function watch(id) {
  watching = id;
  while (watching === id) {
    let challenge;
    try {
      challenge = await api("GET", `/demo/api/approvals/${id}?wait=25`);
    } catch (error) {
      if (watching === id) setStatus("failed", explain(error));
      return;
    }
    if (watching !== id) return;
    if (challenge.status !== "pending") {
      let text = FINAL[challenge.status] || challenge.status;
      if (challenge.reason === "number_mismatch") text = "Denied: the number picked on the phone did not match.";
      setStatus(challenge.status, text);
      show("approval-code", false);
      watching = null;
      return;
    }
  }
}

async function verifyCode(event) {
  event.preventDefault();
  const id = $("approval").dataset.challengeId;
  const button = $("code-button");
  busy(button, true, "Checking…");
  try {
    await api("POST", `/demo/api/approvals/${id}/verify`, { code: $("code-input").value });
  } catch (error) {
    if (error.code === "invalid_code") {
      const left = error.body.attempts_remaining;
      setStatus("pending", `That code is not correct: ${left} ${left === 1 ? "try" : "tries"} left.`);
    } else {
      setStatus("failed", error.message);
    }
  } finally {
    busy(button, false);
  }
}

async function signout() {
  watching = null;
  await api("POST", "/demo/api/signout").catch(() => {});
  location.reload();
}

function tab(which) {
  const signinTab = which === "signin";
  $("tab-signin").setAttribute("aria-selected", String(signinTab));
  $("tab-signup").setAttribute("aria-selected", String(!signinTab));
  show("signin-form", signinTab);
  show("signup-form", !signinTab);
  authError("");
  if (signinTab) startAutofill();
  else stopAutofill();
}

async function main() {
  $("signin-form").addEventListener("submit", signin);
  $("signup-form").addEventListener("submit", signup);
  $("tab-signin").addEventListener("click", () => tab("signin"));
  $("tab-signup").addEventListener("click", () => tab("signup"));
  $("signout").addEventListener("click", signout);
  $("transfer-form").addEventListener("submit", transfer);
  $("code-form").addEventListener("submit", verifyCode);
  $("add-phone").addEventListener("click", () => addPhone().catch((e) => alert(e.message)));
  document.addEventListener("visibilitychange", () => !document.hidden && !$("dashboard").hidden && refreshAccount());

  try {
    enter(await api("GET", "/demo/api/session"));
    return;
  } catch (_) {
    /* not signed in */
  }
  show("auth", true);
  if (!supported) {
    show("unsupported", true);
    for (const b of document.querySelectorAll("#auth button.primary")) b.disabled = true;
    return;
  }
  startAutofill();
}

main();
