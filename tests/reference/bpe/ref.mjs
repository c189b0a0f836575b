// Encodes the first NBYTES of a text file (cut back to a UTF-8 boundary) with
// Hugging Face's Tokenizers.js and prints the token count and the FNV-1a 64
// hash of the ids as little-endian int32, which tests/test_tokenizer.c
// (test_bpe_real_text) compares with kvbench's encoding. With --vectors, checks
// llama.cpp's .inp/.out conformance vectors instead (to vet the reference).
// TOKENIZER is a tokenizer.json, or a folder holding tokenizer.json and
// tokenizer_config.json (as tests/reference/bpe/make_reference_hf.sh uses).
// With --cnndm, the text is the articles of the first N records of a
// CNN/DailyMail JSONL file joined by blank lines (test_hf_real_text builds
// the same).
// usage: node ref.mjs TOKENIZER FILE NBYTES
//        node ref.mjs TOKENIZER --cnndm FILE.jsonl N
//        node ref.mjs TOKENIZER --vectors VOCAB.gguf.inp
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";

const [json, file, arg, arg2] = process.argv.slice(2);
const dir = fs.statSync(json).isDirectory();
const tok = new Tokenizer(
  JSON.parse(fs.readFileSync(dir ? json + "/tokenizer.json" : json, "utf8")),
  dir && fs.existsSync(json + "/tokenizer_config.json")
    ? JSON.parse(fs.readFileSync(json + "/tokenizer_config.json", "utf8"))
    : {},
);
const encode = (text) => tok.encode(text, { add_special_tokens: false }).ids;
const report = (name, nbytes, ids) => {
  let h = 0xcbf29ce484222325n;
  for (const id of ids)
    for (let k = 0; k < 4; k++) {
      h ^= BigInt((id >>> (8 * k)) & 255);
      h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
    }
  console.log(`${name}: ${nbytes} bytes, ${ids.length} tokens, hash ${h.toString(16).padStart(16, "0")}`);
};

if (file === "--vectors") {
  const inp = fs.readFileSync(arg, "utf8").split("\n__ggml_vocab_test__\n");
  const out = fs.readFileSync(arg.replace(/\.inp$/, ".out"), "utf8").split("\n");
  let ok = 0;
  for (let i = 0; i < inp.length - 1; i++) if (encode(inp[i]).map((x) => " " + x).join("") === out[i]) ok++;
  console.log(`${arg}: ${ok} of ${inp.length - 1} vectors match`);
} else if (file === "--cnndm") {
  const recs = fs.readFileSync(arg, "utf8").split("\n").filter((l) => l.length).slice(0, parseInt(arg2));
  const text = recs.map((l) => JSON.parse(l).article).join("\n\n");
  report(`${arg} (${recs.length} articles)`, Buffer.byteLength(text, "utf8"), encode(text));
} else {
  const buf = fs.readFileSync(file);
  let n = Math.min(parseInt(arg), buf.length);
  while (n > 0 && n < buf.length && (buf[n] & 0xc0) === 0x80) n--;
  report(file, n, encode(buf.subarray(0, n).toString("utf8")));
}
