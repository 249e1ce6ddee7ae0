// Builds the page into ../orchestrator/static, which the Python package ships: TypeScript from the
// protos (protoc-gen-es), a type check, an esbuild bundle, and build-info.json holding a hash of every
// input so that tests/test_web_bundle.py can tell when the committed bundle is stale.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const web = dirname(fileURLToPath(import.meta.url));
const repo = join(web, "..");
const out = join(repo, "orchestrator", "static");
const gen = join(web, "src", "gen");

function run(command, args) {
  try {
    execFileSync(command, args, { cwd: web, stdio: "inherit" });
  } catch {
    console.error(`failed: ${command} ${args.join(" ")}`);
    process.exit(1);
  }
}

// protoc is the one in the project's grpcio-tools (a Python dev dependency, `make venv`), so that
// no platform binary has to come from npm; PYTHON picks another interpreter that has it.
const venvPython = join(repo, ".venv", "bin", "python");
const python = process.env.PYTHON ?? (existsSync(venvPython) ? venvPython : "python3");
rmSync(gen, { recursive: true, force: true });
mkdirSync(gen, { recursive: true });
run(python, [
  "-m",
  "grpc_tools.protoc",
  `-I${join(repo, "protos")}`,
  `--plugin=protoc-gen-es=${join(web, "node_modules", ".bin", "protoc-gen-es")}`,
  `--es_out=${gen}`,
  "--es_opt=target=ts",
  "roar/v1/orchestrator.proto",
  "roar/v1/common.proto",
]);
run(join(web, "node_modules", ".bin", "tsc"), ["--noEmit", "-p", "."]);

const bundleNotice = [
  "/* Roar's web page, built from web/ by `npm run build`.",
  " * Bundles @bufbuild/protobuf, @connectrpc/connect and @connectrpc/connect-web (Apache-2.0). */",
].join("\n");
mkdirSync(out, { recursive: true });
await esbuild.build({
  entryPoints: [join(web, "src", "main.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: join(out, "app.js"),
  legalComments: "none",
  // The bundled libraries' licence, kept in the shipped file.
  banner: { js: bundleNotice },
  logLevel: "info",
});
// The key shifter runs in an AudioWorklet, a scope of its own: a bundle of its own, loaded by URL.
await esbuild.build({
  entryPoints: [join(web, "src", "pitch-worklet.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: join(out, "pitch-worklet.js"),
  legalComments: "none",
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
  ...["package.json", "package-lock.json", "build.mjs", "tsconfig.json"].map((name) => join(web, name)),
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
