// The gallery page in headless Chromium (Debian's package): add images with the upload form, search by text,
// search by an uploaded image, add and rank texts, read the stats; browse the stored images on the home page a page
// at a time, delete one from its tile, open a search from its address (/?q=...); check that result thumbnails
// render (naturalWidth > 0), that the notice of random weights (the fixture model's) is shown beside the results
// of both searches, that the page and its tabs fit a phone's width, that nothing is fetched from outside the
// server, and that the page raises no script error.
//
//   node test.mjs BASE_URL FIXTURE_IMAGES_DIR OUTPUT_DIR
//
// Screenshots go to OUTPUT_DIR: screenshot.png (text search results), similar.png, add.png, texts.png,
// home-desktop.png and home-phone.png (the home grid at 1280 and 390 pixels), phone.png (search results at 390),
// and failure.png when a step fails. $CHROMIUM overrides the browser (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [base, fixtures, out] = process.argv.slice(2);
if (!base || !fixtures || !out) {
  console.error("usage: node test.mjs BASE_URL FIXTURE_IMAGES_DIR OUTPUT_DIR");
  process.exit(2);
}
mkdirSync(out, { recursive: true });

const uploads = [
  "chelsea_rgb_451x300.jpg",
  "rocket_rgb_progressive_640x427.jpg",
  "coffee_rgba_alpha_ramp_150x100.png",
  "camera_l_128x128.gif",
  "astronaut_lossless_posterized_300x250.webp",
];
const cat = "chelsea_rgb_451x300.jpg";
const desktop = { width: 1280, height: 900 };
const phone = { width: 390, height: 844 };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // Playwright adds --no-sandbox (needed as root), --headless and a fresh --user-data-dir.
  args: ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: desktop });
const page = await context.newPage();
page.setDefaultTimeout(60_000);

const problems = [];
const origin = new URL(base).origin;
// Everything comes from the server: a request anywhere else is a failure (and is not sent).
await page.route("**/*", (route) => {
  const url = route.request().url();
  if (url.startsWith(origin) || url.startsWith("blob:") || url.startsWith("data:")) return route.continue();
  problems.push("request to outside the server: " + url);
  return route.abort();
});
page.on("pageerror", (e) => problems.push("script error: " + e.message));
page.on("console", (m) => {
  // Failed requests that a step provokes on purpose (the rejected upload) are logged by Chromium: not errors.
  if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) problems.push("console error: " + m.text());
});

let passed = 0;
let failed = 0;
async function step(name, body) {
  try {
    await body();
    passed++;
    console.log("ok   " + name);
  } catch (e) {
    failed++;
    console.log("FAIL " + name + ": " + (e && e.message ? e.message.split("\n")[0] : e));
    await page.screenshot({ path: join(out, "failure.png"), fullPage: true }).catch(() => {});
    throw e;
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function tab(name) {
  await page.click(`nav button[data-tab="${name}"]`);
  await page.waitForSelector(`#tab-${name}.active`);
}

// Waits until every thumbnail in the grid has loaded, then returns their natural widths.
async function renderedWidths(grid) {
  await page.waitForFunction((grid) => {
    const imgs = [...document.querySelectorAll(`#${grid} .card img`)];
    return imgs.length > 0 && imgs.every((img) => img.complete);
  }, grid);
  return page.$$eval(`#${grid} .card img`, (imgs) => imgs.map((img) => img.naturalWidth));
}

// The notice of random weights in a results pane: shown, and saying what /api/stats says.
async function checkNotice(id) {
  const notice = (await apiStats()).notice;
  check(/random weights/.test(notice || ""), "/api/stats has no notice of random weights: " + notice);
  check(await page.isVisible(`#${id}`), `#${id} is not shown`);
  const text = await page.textContent(`#${id}`);
  check(text === notice, `#${id} says ${JSON.stringify(text)}`);
}

async function apiStats() {
  return page.evaluate(async () => (await fetch("/api/stats")).json());
}

async function textContents(selector) {
  return page.$$eval(selector, (elements) => elements.map((e) => e.textContent));
}

// The home page: the grid of stored images, once its thumbnails have loaded.
async function home() {
  const response = await page.goto(base);
  check(response.ok(), "GET / gave " + response.status());
  await page.waitForSelector("#browse:not([hidden])");
  await renderedWidths("browse-grid");
}

// What is wider than the screen: the page, the tab bar's content, the rightmost tab.
async function overflow() {
  return page.evaluate(() => {
    const nav = document.querySelector("nav");
    const tabs = [...nav.querySelectorAll("button")].map((b) => b.getBoundingClientRect().right);
    const screen = window.innerWidth;
    return {
      screen, page: document.documentElement.scrollWidth, nav: nav.scrollWidth - nav.clientWidth,
      tabs: Math.max(...tabs),
      wide: document.documentElement.scrollWidth > screen || nav.scrollWidth > nav.clientWidth || Math.max(...tabs) > screen,
    };
  });
}

try {
  await step("the page loads with its stats", async () => {
    const response = await page.goto(base);
    check(response.ok(), "GET / gave " + response.status());
    await page.waitForFunction(() => /\d+ images/.test(document.querySelector("#stats-line").textContent));
    const stats = await apiStats();
    check(stats.images === 0, "the gallery should start empty, has " + stats.images);
    await page.waitForFunction(() => /No images yet/.test(document.querySelector("#search-status").textContent));
  });

  await step("add images: upload with progress, thumbnails render", async () => {
    await tab("add");
    await page.evaluate(() => {
      window.addStatuses = [];
      new MutationObserver(() => window.addStatuses.push(document.querySelector("#add-status").textContent))
        .observe(document.querySelector("#add-status"), { childList: true, characterData: true, subtree: true });
    });
    await page.setInputFiles("#add-files", uploads.map((f) => join(fixtures, f)));
    await page.waitForFunction(() => /5 files/.test(document.querySelector("#add-chosen").textContent));
    await page.click("#add-button");
    await page.waitForFunction(() => /^Added 5 images/.test(document.querySelector("#add-status").textContent));
    const statuses = await page.evaluate(() => window.addStatuses);
    check(statuses.some((s) => /Uploading|Embedding/.test(s)), "no progress shown: " + JSON.stringify(statuses));
    const progress = await page.$eval("#add-progress", (p) => p.value);
    check(progress === 100, "the progress bar ends at " + progress);
    const widths = await renderedWidths("add-results");
    check(widths.length === 5 && widths.every((w) => w > 0), "added thumbnails did not render: " + widths);
    await page.screenshot({ path: join(out, "add.png"), fullPage: true });
    check((await apiStats()).images === 5, "the server does not have 5 images");
  });

  await step("a rejected upload shows the error and stores nothing", async () => {
    await page.setInputFiles("#add-files", [
      { name: cat, mimeType: "image/jpeg", buffer: readFileSync(join(fixtures, cat)) },
      { name: "notes.txt", mimeType: "image/png", buffer: Buffer.from("not an image at all") },
    ]);
    await page.click("#add-button");
    await page.waitForFunction(() => /Nothing was added/.test(document.querySelector("#add-status").textContent));
    const status = await page.textContent("#add-status");
    check(/notes\.txt/.test(status) && /422/.test(status), "the error does not name the file and status: " + status);
    check((await apiStats()).images === 5, "a rejected upload changed the image count");
  });

  await step("an upload over the server's size limit is refused before sending", async () => {
    await page.setInputFiles("#add-files", [
      { name: "huge.png", mimeType: "image/png", buffer: Buffer.alloc(1_500_000, 1) },
    ]);
    await page.click("#add-button");
    await page.waitForFunction(() => /over the server's limit/.test(document.querySelector("#add-status").textContent));
    check((await apiStats()).images === 5, "an oversized upload changed the image count");
  });

  await step("text search: a grid of rendered thumbnails with scores", async () => {
    await tab("search");
    await page.fill("#q", "a photo of a cat");
    await page.press("#q", "Enter");
    await page.waitForFunction(() => /images for/.test(document.querySelector("#search-status").textContent));
    const cards = await page.$$eval("#search-results .card", (cards) => cards.map((c) => ({
      name: c.querySelector(".name").textContent,
      score: c.querySelector(".score").textContent,
    })));
    check(cards.length === 5, "expected 5 results, got " + cards.length);
    check(cards.every((c) => /^-?\d\.\d{3}$/.test(c.score)), "a result without a score: " + JSON.stringify(cards));
    const scores = cards.map((c) => Number(c.score));
    check(scores.every((s, i) => i === 0 || scores[i - 1] >= s), "scores not descending: " + scores);
    const widths = await renderedWidths("search-results");
    check(widths.every((w) => w > 0), "a result image did not render: " + widths);
    await checkNotice("search-notice");
    await page.screenshot({ path: join(out, "screenshot.png"), fullPage: true });
  });

  await step("similar-image upload: the same photo comes first with score 1.000", async () => {
    await tab("similar");
    await page.setInputFiles("#similar-file", join(fixtures, cat));
    await page.waitForFunction(() => /images most like/.test(document.querySelector("#similar-status").textContent));
    const first = await page.$eval("#similar-results .card", (c) => ({
      name: c.querySelector(".name").textContent,
      score: c.querySelector(".score").textContent,
    }));
    check(first.name === cat && first.score === "1.000", "first result: " + JSON.stringify(first));
    const widths = await renderedWidths("similar-results");
    check(widths.length === 5 && widths.every((w) => w > 0), "a result image did not render: " + widths);
    const preview = await page.$eval("#similar-preview", (img) => img.naturalWidth);
    check(preview > 0, "the query image preview did not render");
    await checkNotice("similar-notice");
    await page.screenshot({ path: join(out, "similar.png"), fullPage: true });
  });

  await step("'Similar images' on a result searches the stored neighbours", async () => {
    await page.click("#similar-results .card .more");
    await page.waitForSelector("#tab-search.active");
    await page.waitForFunction(() => /images most like/.test(document.querySelector("#search-status").textContent));
    const names = await page.$$eval("#search-results .card .name", (n) => n.map((e) => e.textContent));
    check(names.length === 4 && !names.includes(cat), "neighbours of the cat: " + names);
  });

  await step("texts: add, rank for an image, similarity", async () => {
    await tab("texts");
    await page.fill("#texts-input", "a photo of a cat\na rocket on the launch pad\na cup of coffee");
    await page.click("#texts-form button");
    await page.waitForFunction(() => document.querySelectorAll("#texts-list li").length === 3);
    await page.setInputFiles("#rank-file", join(fixtures, cat));
    await page.click("#rank-form button");
    await page.waitForFunction(() => document.querySelectorAll("#rank-results tr").length === 3);
    await page.fill("#sim-text", "a photo of a cat");
    await page.setInputFiles("#sim-file", join(fixtures, cat));
    await page.click("#sim-form button");
    await page.waitForFunction(() => /cosine similarity/.test(document.querySelector("#sim-status").textContent));
    await page.screenshot({ path: join(out, "texts.png"), fullPage: true });
  });

  await step("stats tab", async () => {
    await tab("stats");
    await page.waitForFunction(() => /images\s*5/.test(document.querySelector("#stats-table").textContent));
    const text = await page.textContent("#stats-table");
    check(/texts\s*3/.test(text) && /embedding dimension/.test(text), "stats table: " + text);
  });

  await step("home: with no query, the stored images, newest first, on one page", async () => {
    await home();
    const names = await textContents("#browse-grid .card .name");
    check(names.join() === [...uploads].reverse().join(), "the home grid: " + names);
    const status = await page.textContent("#search-status");
    check(/^5 images, newest first/.test(status), "the home status: " + status);
    check(await page.isHidden("#browse-pager"), "a pager for a single page");
    check(await page.isHidden("#browse-button"), "'All images' shown on the home page");
    await page.screenshot({ path: join(out, "home-desktop.png"), fullPage: true });
  });

  await step("home at a phone's width: the tabs fit, the grid reflows to two columns", async () => {
    const columns = () => page.$eval("#browse-grid", (g) => getComputedStyle(g).gridTemplateColumns.split(" ").length);
    const wide = await columns();
    await page.setViewportSize(phone);
    await renderedWidths("browse-grid");
    const fit = await overflow();
    check(fit.screen === 390 && !fit.wide, "wider than the screen: " + JSON.stringify(fit));
    const narrow = await columns();
    check(wide > 2 && narrow === 2, `grid columns: ${wide} at 1280 pixels, ${narrow} at 390`);
    await page.screenshot({ path: join(out, "home-phone.png"), fullPage: true });
  });

  await step("at a phone's width: nothing wider than the screen, the notice beside the results", async () => {
    await page.setViewportSize(phone);
    await tab("search");
    await page.fill("#q", "a photo of a cat");
    await page.press("#q", "Enter");
    await page.waitForFunction(() => /images for/.test(document.querySelector("#search-status").textContent));
    await checkNotice("search-notice");
    const fit = await overflow();
    const notice = await page.$eval("#search-notice", (n) => n.getBoundingClientRect().right);
    check(!fit.wide && notice <= fit.screen, "wider than the screen: " + JSON.stringify({ ...fit, notice }));
    await page.screenshot({ path: join(out, "phone.png"), fullPage: true });
    await page.setViewportSize(desktop);
  });

  await step("/?q= runs that search on load; a search puts its text in the address", async () => {
    const searched = (q) => page.waitForFunction((q) =>
      document.querySelector("#search-status").textContent.includes(`images for “${q}”`), q);
    await page.goto(base + "/?q=" + encodeURIComponent("a photo of a cat"));
    await searched("a photo of a cat");
    check(await page.inputValue("#q") === "a photo of a cat", "the search box: " + await page.inputValue("#q"));
    const results = await page.$$eval("#search-results .card", (cards) => cards.length);
    check(results === 5 && await page.isHidden("#browse"), `${results} results, the home grid hidden`);
    await page.fill("#q", "a rocket on the launch pad");
    await page.press("#q", "Enter");
    await searched("a rocket on the launch pad");
    const q = new URL(page.url()).searchParams.get("q");
    check(q === "a rocket on the launch pad", "the address after a search: " + page.url());
    await page.reload();
    await searched("a rocket on the launch pad");
    await page.click("#browse-button");
    await page.waitForSelector("#browse:not([hidden])");
    check(new URL(page.url()).search === "", "the address after 'All images': " + page.url());
    check(await page.$$eval("#search-results .card", (cards) => cards.length) === 0, "search results left beside the home grid");
  });

  await step("home paging: 24 images a page, older and newer", async () => {
    // 25 copies of a stored image make 30 images: a page of 24 and one of 6.
    const added = await page.evaluate(async () => {
      const { images } = await (await fetch("/api/images")).json();
      const camera = images.find((i) => i.name === "camera_l_128x128.gif");
      const bytes = await (await fetch(camera.url)).blob();
      const form = new FormData();
      for (let i = 1; i <= 25; i++) form.append("images", bytes, `copy-${String(i).padStart(2, "0")}.gif`);
      return (await (await fetch("/api/images", { method: "POST", body: form })).json()).added.length;
    });
    check(added === 25, "added " + added + " copies");
    const copies = Array.from({ length: 25 }, (_, i) => `copy-${String(25 - i).padStart(2, "0")}.gif`);
    const newestFirst = [...copies, ...[...uploads].reverse()];
    const shows = async (pageNumber, names) => {
      await page.waitForFunction((label) => document.querySelector("#browse-page").textContent === label, "page " + pageNumber);
      await renderedWidths("browse-grid");
      const shown = await textContents("#browse-grid .card .name");
      check(shown.join() === names.join(), `page ${pageNumber}: ${shown}`);
    };
    await home();
    await shows(1, newestFirst.slice(0, 24));
    check(await page.isDisabled("#browse-newer") && await page.isEnabled("#browse-older"), "page 1's buttons");
    await page.click("#browse-older");
    await shows(2, newestFirst.slice(24));
    check(await page.isEnabled("#browse-newer") && await page.isDisabled("#browse-older"), "page 2's buttons");
    await page.click("#browse-newer");
    await shows(1, newestFirst.slice(0, 24));
  });

  await step("delete from a tile: cancelled, nothing changes; confirmed, the tile and the image are gone", async () => {
    const tile = await page.$eval("#browse-grid .card", (c) => ({ id: c.dataset.id, name: c.querySelector(".name").textContent }));
    const button = `#browse-grid .card[data-id="${tile.id}"] .delete`;
    page.once("dialog", (dialog) => dialog.dismiss());
    await page.click(button);
    check(await page.isVisible(button) && (await apiStats()).images === 30, "a cancelled delete changed something");
    let asked = "";
    page.once("dialog", (dialog) => { asked = dialog.message(); dialog.accept(); });
    await page.click(button);
    await page.waitForFunction((id) => !document.querySelector(`.card[data-id="${id}"]`), tile.id);
    check(asked.includes(tile.name), "the confirmation does not name the image: " + asked);
    const status = await page.evaluate(async (id) => (await fetch("/api/images/" + id)).status, tile.id);
    check(status === 404, `GET /api/images/${tile.id} after the delete: ${status}`);
    check((await apiStats()).images === 29, "the server does not have 29 images");
    // The page fills up again from the older images.
    await page.waitForFunction(() => document.querySelectorAll("#browse-grid .card").length === 24
      && /^29 images/.test(document.querySelector("#search-status").textContent));
  });

  await step("no outside requests, no script errors", async () => {
    check(problems.length === 0, problems.join("; "));
  });
} catch {
  // reported by step()
} finally {
  await browser.close();
}
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
