// The demo page (/demo) in headless Chromium with a CDP virtual authenticator (CTAP2, internal,
// resident keys, user verification): sign up with a passkey, sign-in from autofill (conditional
// UI), usernameless and named sign-in with the button, and push approvals answered by `assent-device` while the page waits. A screenshot
// of each step goes to ASSENT_ARTIFACTS.
//
// Run by tests/browser.rs against a real `assent` process; environment:
//   ASSENT_URL           http://localhost:<port> (a secure context for WebAuthn)
//   ASSENT_DEVICE        the assent-device binary
//   ASSENT_DEVICE_STATE  where assent-device keeps its state
//   ASSENT_ARTIFACTS     directory for screenshots
//   CHROMIUM             the browser executable

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const run = promisify(execFile);
const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("ASSENT_URL");
const artifacts = env("ASSENT_ARTIFACTS");
mkdirSync(artifacts, { recursive: true });

let steps = 0;
let failed = 0;

async function device(...args) {
  const { stdout } = await run(env("ASSENT_DEVICE"), ["--state", env("ASSENT_DEVICE_STATE"), ...args], {
    timeout: 30_000,
  });
  return stdout;
}

/// A fresh browser profile with its own virtual authenticator.
async function session(browser) {
  const context = await browser.newContext({ viewport: { width: 1180, height: 860 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { context, page, cdp, authenticatorId };
}

async function step(name, page, body) {
  steps += 1;
  const file = join(artifacts, `${String(steps).padStart(2, "0")}-${name}.png`);
  try {
    await body();
    console.log(`ok   ${steps} ${name}`);
  } catch (error) {
    failed += 1;
    console.error(`FAIL ${steps} ${name}: ${error.stack || error}`);
  } finally {
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
  }
  if (failed) throw new Error(`step ${name} failed; screenshot ${file}`);
}

/// Signs out; the page reloads signed out (and offers passkeys in autofill again).
async function signOut(page) {
  await Promise.all([page.waitForEvent("load"), page.click("#signout")]);
}

async function signCount(cdp, authenticatorId) {
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  return credentials[0].signCount;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: env("CHROMIUM"),
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    const { page, cdp, authenticatorId } = await session(browser);

    await step("sign-in-page", page, async () => {
      await page.goto(`${base}/demo`);
      await page.waitForSelector("#auth:not([hidden])");
      assert.equal(await page.isVisible("#unsupported"), false, "the page says passkeys are unsupported");
      assert.equal(await page.getAttribute("#signin-username", "autocomplete"), "username webauthn");
    });

    await step("sign-up-form", page, async () => {
      await page.click("#tab-signup");
      await page.fill("#signup-username", "jane");
      await page.fill("#signup-name", "Jane Doe");
      await page.fill("#signup-email", "jane@example.com");
    });

    await step("signed-up", page, async () => {
      await page.click("#signup-button");
      await page.waitForSelector("#dashboard:not([hidden])");
      assert.equal(await page.textContent("#account-name"), "jane");
      assert.equal(await page.textContent("#greeting-name"), "Jane");
      assert.equal(await page.locator("#passkeys li").count(), 1);
      // Registration asked for a discoverable credential, and the authenticator made one.
      const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
      assert.equal(credentials.length, 1);
      assert.equal(credentials[0].isResidentCredential, true, "the passkey is not discoverable");
      assert.equal(credentials[0].rpId, "localhost");
    });

    // Signed out, the page asks for a passkey in the username field's autofill (conditional
    // mediation); the virtual authenticator, simulating the user's pick, answers it at once.
    let count = await signCount(cdp, authenticatorId);
    await step("autofill-sign-in", page, async () => {
      await signOut(page);
      await page.waitForSelector("#dashboard:not([hidden])");
      assert.equal(await page.textContent("#account-name"), "jane");
      assert.equal(await signCount(cdp, authenticatorId), ++count, "the passkey signed once more");
    });

    // From here on the browser offers no autofill, so the button starts each sign-in.
    await page.addInitScript(() => {
      PublicKeyCredential.isConditionalMediationAvailable = async () => false;
    });

    await step("usernameless-sign-in", page, async () => {
      await signOut(page);
      await page.waitForSelector("#auth:not([hidden])");
      await page.fill("#signin-username", "");
      await page.click("#signin-button");
      await page.waitForSelector("#dashboard:not([hidden])");
      assert.equal(await page.textContent("#account-name"), "jane");
      assert.equal(await signCount(cdp, authenticatorId), ++count, "the passkey signed once more");
    });

    await step("named-sign-in", page, async () => {
      await signOut(page);
      await page.waitForSelector("#auth:not([hidden])");
      await page.fill("#signin-username", "jane");
      await page.click("#signin-button");
      await page.waitForSelector("#dashboard:not([hidden])");
      assert.equal(await page.textContent("#account-name"), "jane");
      assert.equal(await signCount(cdp, authenticatorId), ++count, "the passkey signed once more");
    });

    await step("add-phone", page, async () => {
      await page.click("#add-phone");
      await page.waitForSelector("#enroll:not([hidden]) svg");
      const uri = await page.textContent("#enroll-uri");
      assert.match(uri, /^assent:\/\/enroll\?/);
      const out = await device("enroll", uri, "--name", "Jane's phone");
      assert.match(out, /Enrolled device dev_/);
    });

    await step("phone-added", page, async () => {
      await page.waitForSelector("#phones .device");
      assert.match(await page.textContent("#phones"), /Jane's phone/);
    });

    // A transfer: the page shows the number and the details and waits; the phone approves.
    let id;
    await step("waiting-for-approval", page, async () => {
      await page.fill("#transfer-amount", "EUR 1,250.00");
      await page.fill("#transfer-payee", "ACME Supplies GmbH");
      await page.click("#transfer-button");
      await page.waitForSelector("#approval-push:not([hidden])");
      id = await page.textContent("#approval-id");
      assert.match(id, /^chl_/);
      assert.match(await page.textContent("#approval-number"), /^\d{2}$/);
      assert.match(await page.textContent("#approval-details"), /EUR 1,250\.00[\s\S]*ACME Supplies GmbH/);
      assert.equal(await page.getAttribute("#approval-status", "data-status"), "pending");
    });

    await step("approved", page, async () => {
      const number = await page.textContent("#approval-number");
      const shown = await device("show", id);
      assert.match(shown, /EUR 1,250\.00/);
      // The page is long-polling while the phone answers.
      const out = await device("approve", id, "--number", number);
      assert.match(out, /Request approved/);
      await page.waitForSelector('#approval-status[data-status="approved"]');
      assert.match(await page.textContent("#approval-status"), /Approved/);
    });

    await step("denied", page, async () => {
      await page.fill("#transfer-amount", "EUR 9,999.00");
      await page.fill("#transfer-payee", "Unknown Ltd");
      await page.click("#transfer-button");
      await page.waitForFunction((previous) => {
        const current = document.getElementById("approval-id").textContent;
        return current && current !== previous;
      }, id);
      const second = await page.textContent("#approval-id");
      assert.match(await device("deny", second), /denied/i);
      await page.waitForSelector('#approval-status[data-status="denied"]');
    });

    // Another person, with no phone: the approval falls back to a code, and the page asks for it.
    const other = await session(browser);
    await step("code-fallback", other.page, async () => {
      await other.page.goto(`${base}/demo`);
      await other.page.click("#tab-signup");
      await other.page.fill("#signup-username", "sam");
      await other.page.fill("#signup-name", "Sam Roe");
      await other.page.fill("#signup-email", "sam@example.com");
      await other.page.click("#signup-button");
      await other.page.waitForSelector("#dashboard:not([hidden])");
      await other.page.click("#transfer-button");
      await other.page.waitForSelector("#approval-code:not([hidden])");
      assert.match(await other.page.textContent("#approval-destination"), /@example\.com/);
      assert.equal(await other.page.isVisible("#code-input"), true);
      await other.page.fill("#code-input", "000000");
      await other.page.click("#code-button");
      await other.page.waitForFunction(() =>
        /not correct: 4 tries left/.test(document.getElementById("approval-status-text").textContent),
      );
    });
  } finally {
    await browser.close();
  }
  console.log(`${steps} passed, ${failed} failed`);
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
