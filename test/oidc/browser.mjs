// A browser for `oauthfs login`: set BROWSER to "node browser.mjs" and it
// opens what login hands it (a file:// page that forwards to the secret
// sign-in link, which never appears on a command line) in headless
// Chromium (Debian's /usr/bin/chromium through playwright-core), presses
// Continue on oauthfs's confirmation page, signs in on oidc-provider's real
// login page, consents, says yes on oauthfs's final confirmation, and
// waits for its last page.
//
// Environment: BROWSER_LOG (a file for progress and errors), CHROMIUM
// (default /usr/bin/chromium), SCREENSHOT (optional PNG of the last page).
import fs from 'node:fs';
import { chromium } from 'playwright-core';

const url = process.argv[2];
const logFile = process.env.BROWSER_LOG || '/dev/stderr';
const log = (m) => fs.appendFileSync(logFile, `${m}\n`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  log(`argv: ${url}`);
  await page.goto(url);
  await page.waitForSelector('form[action="/start"] button.go', { timeout: 15000 });
  log(`confirmation page: ${await page.textContent('h1')}`);
  await page.click('form[action="/start"] button.go');
  await page.fill('input[name=login]', 'alice');
  await page.fill('input[name=password]', 'wonderland');
  await page.click('button[type=submit]');
  log('signed in at the provider');
  await page.click('button:has-text("Continue")');
  log('consented');
  await page.waitForSelector('form[action="/confirm"] button.go', { timeout: 15000 });
  log(`final confirmation: ${await page.textContent('h1')}`);
  await page.click('form[action="/confirm"] button.go');
  await page.waitForSelector('h1', { timeout: 15000 });
  const heading = await page.textContent('h1');
  // The screenshot before the log line the test waits for: the test's
  // directory is removed when it ends.
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  log(`callback page: ${heading}`);
  process.exitCode = heading.startsWith('Signed in') ? 0 : 1;
} catch (e) {
  log(`error: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
