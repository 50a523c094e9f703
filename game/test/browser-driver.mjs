// Drives one page of the game in Debian's chromium for cli/tests/game.rs: a JSON command per
// line on stdin, one JSON answer per line on stdout ({"error": …} when it failed). Page console
// messages and errors go to stderr. Never downloads a browser.
//
//   {"open": URL}                         load the page
//   {"close": true}                       close the page (as a user closes its tab)
//   {"wait": "lap", "n": N, "timeout_s"}  until the page's lap timer lists lap N
//   {"wait": "results", "timeout_s"}      until the results screen is ready
//   {"reload": true}                      reload (the page resumes its session)
//   {"click": SELECTOR, "loads": BOOL}    click the element (as a user does); "loads": until the
//                                         page it loads has loaded
//   {"front": true}                       bring the tab to the front (a hidden tab's race pauses)
//   {"read": true}                        the session, the page's lap timer, the results, the
//                                         leaderboard, the telemetry client's counters, the
//                                         start form's error text
//   {"screenshot": PATH}                  a PNG of the page
//   {"quit": true}
//
// "tab": N on a command picks the page it acts on (default 0); opening tab N makes it, in the
// same browser context as the others (one origin's storage and locks, as tabs of one window).

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const browser = await chromium.launch({
  executablePath: process.env.PITGUN_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
const tabs = [];

async function tab(n) {
  if (!tabs[n]) {
    const page = await context.newPage();
    page.on("console", (m) => process.stderr.write(`tab ${n} console.${m.type()}: ${m.text()}\n`));
    page.on("pageerror", (e) => process.stderr.write(`tab ${n} pageerror: ${e.message}\n`));
    tabs[n] = page;
  }
  return tabs[n];
}

async function run(cmd) {
  const ms = (cmd.timeout_s ?? 60) * 1000;
  const page = await tab(cmd.tab ?? 0);
  if (cmd.open) {
    await page.goto(cmd.open, { timeout: ms });
    return {};
  }
  if (cmd.close) {
    await page.close({ runBeforeUnload: true });
    return {};
  }
  if (cmd.wait === "lap") {
    await page.waitForSelector(`#lap-times li[data-lap="${cmd.n}"]`, { state: "attached", timeout: ms });
    return {};
  }
  if (cmd.wait === "results") {
    await page.waitForSelector("#results[data-state=ready]", { state: "attached", timeout: ms });
    return {};
  }
  if (cmd.reload) {
    await page.reload({ timeout: ms });
    return {};
  }
  if (cmd.front) {
    await page.bringToFront();
    return {};
  }
  if (cmd.click) {
    const loaded = cmd.loads ? page.waitForEvent("load", { timeout: ms }) : null;
    await page.click(cmd.click, { timeout: ms });
    await loaded;
    return {};
  }
  if (cmd.read) {
    return await page.evaluate(() => ({
      state: window.pitgun.state(),
      session: window.pitgun.sessionId(),
      laps: [...document.querySelectorAll("#lap-times li[data-lap]")].map((li) => ({ lap: Number(li.dataset.lap), us: Number(li.dataset.us) })),
      results: [...document.querySelectorAll("#results-laps li[data-lap]")].map((li) => ({
        lap: Number(li.dataset.lap),
        lap_time_s: Number(li.dataset.lapTimeS),
      })),
      leaderboard: [...document.querySelectorAll("#leaderboard li[data-player]")].map((li) => li.dataset.player),
      telemetry: window.pitgun.telemetry(),
      start_error: document.getElementById("start-error")?.textContent ?? "",
    }));
  }
  if (cmd.screenshot) {
    await page.screenshot({ path: cmd.screenshot });
    return {};
  }
  throw new Error(`unknown command ${JSON.stringify(cmd)}`);
}

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  if (cmd.quit) break;
  try {
    process.stdout.write(JSON.stringify({ ok: true, ...(await run(cmd)) }) + "\n");
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: String(e?.message ?? e) }) + "\n");
  }
}
await browser.close();
