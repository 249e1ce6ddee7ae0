// Builds the page into ../orchestrator/static, which the Python package ships: TypeScript from the
// protos (buf + protoc-gen-es), a type check, an esbuild bundle, and build-info.json holding a hash
// of every input so that tests/test_web_bundle.py can tell when the committed bundle is stale.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const web = dirname(fileURLToPath(import.meta.url));
const repo = join(web, "..");
const out = join(repo, "orchestrator", "static");
const bin = (name) => join(web, "node_modules", ".bin", name);

function run(tool, args) {
  try {
    execFileSync(bin(tool), args, { cwd: web, stdio: "inherit" });
  } catch {
    console.error(`${tool} ${args.join(" ")} failed`);
    process.exit(1);
  }
}

run("buf", ["generate"]);
run("tsc", ["--noEmit", "-p", "."]);

mkdirSync(out, { recursive: true });
await esbuild.build({
  entryPoints: [join(web, "src", "main.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: join(out, "app.js"),
  legalComments: "none",
  banner: {
    js: "/* Roar web page, built from web/ by `npm run build`. Bundles @bufbuild/protobuf and @connectrpc/connect(-web), Apache-2.0. */",
  },
  logLevel: "info",
});
await esbuild.build({
  entryPoints: [join(web, "src", "app.css")],
  minify: true,
  outfile: join(out, "app.css"),
  logLevel: "info",
});
copyFileSync(join(web, "src", "index.html"), join(out, "index.html"));

// The inputs and their hashing must stay the same as in tests/test_web_bundle.py: sorted repo-relative
// paths, each file's sha256 with CRLF read as LF, and the sha256 of "<hash>  <path>\n" lines.
function filesUnder(dir, skip) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.name.startsWith(".") || path === skip) return [];
    return entry.isDirectory() ? filesUnder(path, skip) : [path];
  });
}

const inputs = [
  ...filesUnder(join(web, "src"), join(web, "src", "gen")),
  ...["package.json", "package-lock.json", "build.mjs", "tsconfig.json", "buf.gen.yaml"].map((name) => join(web, name)),
  ...filesUnder(join(repo, "protos", "roar", "v1")).filter((path) => path.endsWith(".proto")),
]
  .map((path) => relative(repo, path).split("\\").join("/"))
  .sort();

const sha256 = (data) => createHash("sha256").update(data).digest("hex");
const hashes = Object.fromEntries(
  inputs.map((path) => {
    const text = readFileSync(join(repo, path)).toString("latin1").replaceAll("\r\n", "\n");
    return [path, sha256(Buffer.from(text, "latin1"))];
  }),
);
const buildInfo = {
  sources_sha256: sha256(inputs.map((path) => `${hashes[path]}  ${path}\n`).join("")),
  inputs: hashes,
};
writeFileSync(join(out, "build-info.json"), `${JSON.stringify(buildInfo, null, 2)}\n`);
console.log(`build-info.json: sources_sha256 ${buildInfo.sources_sha256}`);
