// render_fixtures.mjs - writes the expected renderings of tests/chat/manifest.json
// with Hugging Face's Jinja (@huggingface/jinja), as transformers' apply_chat_template
// calls a template: messages, tools = None, add_generation_prompt and the
// special tokens. The library's strftime_now reads the clock: the clock is
// fixed to the entry's date (default 2024-07-26) so the output does not change
// from day to day. An entry's "date" is also passed as date_string; its
// "enable_thinking" as is.
//
//   cd /tmp && npm install @huggingface/jinja
//   NODE_PATH=/tmp/node_modules node tests/chat/render_fixtures.mjs \
//       $KVBENCH_MODELS EXTRA_DIR tests/chat
//
// Writes STEM-CONV-gp.txt / -nogp.txt, or .err holding the template's
// exception message where it raises.
import { createRequire } from "module";
import fs from "fs";
import path from "path";

const require = createRequire(import.meta.url);
const { Template } = require("@huggingface/jinja");
const [models, extra, outDir] = process.argv.slice(2);
const here = path.dirname(new URL(import.meta.url).pathname);
const manifest = JSON.parse(fs.readFileSync(path.join(here, "manifest.json"), "utf8"));
const MON = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

// new Date() with no argument gives noon of the fixed day.
const RealDate = Date;
let today = "2024-07-26";
globalThis.Date = class extends RealDate {
  constructor(...a) {
    if (a.length) super(...a);
    else super(`${today}T12:00:00`);
  }
};

function strftimeOf(iso) {
  const [y, m, d] = iso.split("-").map(Number);
  return (fmt) => fmt.replace(/%([dbYm])/g, (_, c) =>
    c === "d" ? String(d).padStart(2, "0") : c === "b" ? MON[m - 1] : c === "Y" ? String(y) : String(m).padStart(2, "0"));
}

// tokenizer.chat_template of a GGUF file: the key, then type 8 (string),
// a u64 length and the bytes.
function ggufTemplate(file) {
  const d = fs.readFileSync(file), key = Buffer.from("tokenizer.chat_template");
  const at = d.indexOf(key) + key.length;
  if (at < key.length || d.readUInt32LE(at) !== 8) throw new Error(`${file}: no tokenizer.chat_template string`);
  const n = Number(d.readBigUInt64LE(at + 4));
  return d.subarray(at + 12, at + 12 + n).toString("utf8");
}

function load(t) {
  if (t.gguf) return { text: ggufTemplate(path.join(models, t.gguf)), bos: t.bos, eos: t.eos };
  if (t.extra) return { text: fs.readFileSync(path.join(extra, t.extra), "utf8"), bos: t.bos, eos: t.eos };
  if (t.file) return { text: fs.readFileSync(path.join(models, t.file), "utf8"), bos: t.bos, eos: t.eos };
  const c = JSON.parse(fs.readFileSync(path.join(models, t.config), "utf8"));
  const tok = (v) => (v == null ? "" : typeof v === "string" ? v : v.content);
  return { text: c.chat_template, bos: tok(c.bos_token), eos: tok(c.eos_token) };
}

let n = 0;
for (const t of manifest.templates) {
  if (t.extra && !fs.existsSync(path.join(extra, t.extra))) { // keep the renderings already there
    console.log(`${t.stem}: ${t.extra} not in ${extra}, skipped`);
    continue;
  }
  const { text, bos, eos } = load(t);
  const tmpl = new Template(text);
  for (const [conv, messages] of Object.entries(manifest.conversations)) {
    for (const gp of [false, true]) {
      const ctx = { messages, tools: null, documents: null, add_generation_prompt: gp,
                    bos_token: bos, eos_token: eos };
      today = t.date || "2024-07-26";
      if (t.date) ctx.date_string = strftimeOf(t.date)("%d %b %Y");
      if ("enable_thinking" in t) ctx.enable_thinking = t.enable_thinking;
      const stem = path.join(outDir, `${t.stem}-${conv}-${gp ? "gp" : "nogp"}`);
      try {
        fs.writeFileSync(stem + ".txt", tmpl.render(ctx));
      } catch (e) {
        fs.writeFileSync(stem + ".err", e.message);
      }
      n++;
    }
  }
}
console.log(`${n} renderings written to ${outDir}`);
