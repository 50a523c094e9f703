// Bundles the page (dist/), the Node tests (dist-test/) or the bots (dist-bots/) with esbuild.
// The type check is `tsc --noEmit`, run by `npm run build` before this.
import { build } from "esbuild";
import { cpSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const arg = process.argv[2];
const node = { bundle: true, platform: "node", format: "esm", target: "node20", sourcemap: "inline", logLevel: "warning" };

if (arg === "--tests") {
  rmSync(join(root, "dist-test"), { recursive: true, force: true });
  const entries = readdirSync(join(root, "test")).filter((f) => f.endsWith(".test.ts")).map((f) => join(root, "test", f));
  await build({ ...node, entryPoints: entries, outdir: join(root, "dist-test"), outExtension: { ".js": ".mjs" } });
} else if (arg === "--bots") {
  await build({ ...node, entryPoints: [join(root, "src/bots.ts")], outfile: join(root, "dist-bots/bots.mjs") });
} else if (arg === "--tool") {
  await build({ ...node, entryPoints: [join(root, process.argv[3])], outfile: join(root, "dist-bots", process.argv[4]) });
} else {
  const out = join(root, "dist");
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  await build({
    entryPoints: [join(root, "src/ui/main.ts")],
    bundle: true, format: "esm", target: "es2022", minify: true, sourcemap: true,
    outfile: join(out, "app.js"), logLevel: "warning",
  });
  cpSync(join(root, "static"), out, { recursive: true });
}
