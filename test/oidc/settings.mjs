// A browser for `oauthfs settings`: set BROWSER to "node settings.mjs" and
// it opens what settings hands it (a file:// page that forwards to the
// one-time link) in headless Chromium and works the Managed Credentials
// page as a person would, writing each step to BROWSER_LOG:
//
//   1. sees the page, its user and both integrations with their statuses;
//   2. opens Demo's details, reads its GUID and copies it with the button;
//   3. signs in to Demo: oidc-provider's login and consent pages, then
//      oauthfs's final confirmation, and back on the page;
//      logs "step: signed in" and waits for the file $STEP_DIR/go1;
//   4. a page on another site (oidc-provider's /test/evil) posts the Sign
//      out form without the csrf field; back on the page Demo is still
//      signed in;
//   5. signs out of Demo from the page;
//      logs "step: signed out" and exits.
//
// Environment: BROWSER_LOG, STEP_DIR, EVIL (the other site's page),
// CHROMIUM (default /usr/bin/chromium), SCREENSHOT (optional PNG).
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const url = process.argv[2];
const logFile = process.env.BROWSER_LOG || '/dev/stderr';
const log = (m) => fs.appendFileSync(logFile, `${m}\n`);
const waitFile = async (f) => {
  for (let i = 0; i < 600 && !fs.existsSync(f); i++) await new Promise((r) => setTimeout(r, 100));
  if (!fs.existsSync(f)) throw new Error(`no ${f} after 60 s`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const demo = () => page.locator('li.integration', { has: page.locator('h3', { hasText: /^Demo$/ }) });
  const status = async () => (await demo().locator('[data-status]').textContent()).trim();
  const flash = async () => ((await page.locator('.flash').count()) ? (await page.locator('.flash').textContent()).trim() : '');

  log(`argv: ${url}`);
  await page.goto(url);
  await page.waitForSelector('h1:has-text("Managed Credentials")', { timeout: 15000 });
  log(`page: ${new URL(page.url()).pathname}`);
  log(`who: ${(await page.textContent('.who')).trim()}`);
  for (const li of await page.locator('li.integration').all()) {
    log(`integration: ${(await li.locator('h3').textContent()).trim()} = ${(await li.locator('[data-status]').textContent()).trim()}`);
  }

  // The details dialog and its copy button.
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(page.url()).origin });
  await demo().locator('summary').click();
  const guid = (await demo().locator('code.guid').textContent()).trim();
  log(`guid: ${guid}`);
  log(`client id: ${(await demo().locator('dt:has-text("Client ID") + dd').textContent()).trim()}`);
  await demo().locator('button.copy').click();
  log(`copied: ${await page.evaluate(() => navigator.clipboard.readText())}`);

  // Sign in through the provider's real pages.
  await demo().locator('button:has-text("Sign in")').click();
  await page.fill('input[name=login]', 'alice');
  await page.fill('input[name=password]', 'wonderland');
  await page.click('button[type=submit]');
  await page.click('button:has-text("Continue")');
  await page.waitForSelector('form[action="/confirm"] button.go', { timeout: 15000 });
  await page.click('form[action="/confirm"] button.go');
  await page.waitForSelector('h1:has-text("Managed Credentials")', { timeout: 15000 });
  log(`flash: ${await flash()}`);
  log(`status: ${await status()}`);
  log('step: signed in');
  await waitFile(path.join(process.env.STEP_DIR, 'go1'));

  // Another site posts the Sign out form, without the csrf field.
  const settings = page.url();
  const target = `${new URL(settings).origin}/settings/integrations/${guid}/signout`;
  const resp = await page.goto(`${process.env.EVIL}?target=${encodeURIComponent(target)}`);
  await page.waitForURL(target, { timeout: 15000 });
  log(`cross-site post: ${(await page.content()).includes('nothing was changed') ? 'refused' : 'accepted'}`);
  await page.goto(settings);
  log(`status after the cross-site post: ${await status()}`);

  await demo().locator('button:has-text("Sign out")').click();
  await page.waitForSelector('h1:has-text("Managed Credentials")', { timeout: 15000 });
  log(`flash: ${await flash()}`);
  log(`status: ${await status()}`);
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  log('step: signed out');
} catch (e) {
  for (const p of browser.contexts().flatMap((c) => c.pages())) {
    log(`at ${p.url()}: ${(await p.content()).slice(0, 2000)}`);
  }
  log(`error: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
