#!/usr/bin/env bash
# The rotary families through the command line: `kvbench info` names the
# pairing and the windowed layers, a sweep on a gemma2 file runs and its
# report says which layers are windowed, and files that would load silently
# wrong are refused by name (an unknown {arch}.* key, an unread tensor, an
# unknown rope scaling type, mixture-of-experts) with a non-zero exit.
# usage: test_arch_cli.sh KVBENCH_BINARY TMPDIR REFERENCE_DIR
set -u
kv=$1
tmp=$2
ref=$3
rm -rf "$tmp" && mkdir -p "$tmp"
. "$(cd "$(dirname "$0")" && pwd)/testlib.sh"

# synthetic files of arch_ref.py, and damaged variants of the gemma2 one
/usr/bin/python3 - "$ref" "$tmp" <<'PY' || { echo "FAIL writing the synthetic files"; exit 1; }
import sys
sys.path.insert(0, sys.argv[1])
import arch_ref, gguf_io as G
tmp = sys.argv[2]
for name in ('gemma2_swa8_cap', 'gemma3_swa6_linear8', 'qwen2_bias_gqa2'):
    arch_ref.make('%s/%s.gguf' % (tmp, name), name)
meta, t, types = G.read('%s/qwen2_bias_gqa2.gguf' % tmp)
def rewrite(path, meta_add, extra_tensors=()):
    m = {}
    for k, v in meta.items():  # re-type the values as the writer wants them
        if isinstance(v, str): m[k] = (G.STRING, v)
        elif isinstance(v, float): m[k] = (G.FLOAT32, v)
        elif isinstance(v, int): m[k] = (G.U32, v)
        elif isinstance(v, list) and v and isinstance(v[0], str): m[k] = (G.ARRAY, (G.STRING, v))
        elif isinstance(v, list) and v and isinstance(v[0], float): m[k] = (G.ARRAY, (G.FLOAT32, v))
        elif isinstance(v, list): m[k] = (G.ARRAY, (G.I32, v))
    m.update(meta_add)
    G.write(path, m, [(n, a, types[n]) for n, a in t.items()] + list(extra_tensors))
import numpy as np
rewrite(tmp + '/unknown_key.gguf', {'qwen2.attention.scale': (G.FLOAT32, 0.1)})
rewrite(tmp + '/scaling.gguf', {'qwen2.rope.scaling.type': (G.STRING, 'longrope')})
rewrite(tmp + '/moe.gguf', {'qwen2.expert_count': (G.U32, 8)})
rewrite(tmp + '/extra_tensor.gguf', {}, [('blk.0.attn_q_norm.weight', np.ones(32), G.F32)])
tekken = ('{%- set today = strftime_now("%Y-%m-%d") %}'
          '{%- set default_system_message = "You are Probe, a model trained by kvbench. Today is " + today + ". Answer briefly." %}'
          '{{- bos_token }}{%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}'
          '{%- else %}{%- set system_message = default_system_message %}{%- endif %}'
          '{{- "[SYSTEM_PROMPT]" + system_message + "[/SYSTEM_PROMPT]" }}{#- [AVAILABLE_TOOLS] unused -#}'
          '{%- for message in messages %}{%- if message["role"] == "user" %}{{- "[INST]" + message["content"] + "[/INST]" }}'
          '{%- endif %}{%- endfor %}')
rewrite(tmp + '/tekken.gguf', {'tokenizer.chat_template': (G.STRING, tekken)})
PY

out=$("$kv" info "$tmp/gemma3_swa6_linear8.gguf" 2>&1)
if echo "$out" | grep -q "^architecture  gemma3" && echo "$out" | grep -q "^rope_pairing  neox" &&
   echo "$out" | grep -q "^sliding_window 6 tokens on 6 of 7 layers (0-4,6; base 10000)" &&
   echo "$out" | grep -q "^rope_scaling  linear (factor 8"; then ok "info gemma3"; else bad "info gemma3" "$out"; fi
out=$("$kv" info "$tmp/gemma2_swa8_cap.gguf" 2>&1)
if echo "$out" | grep -q "^softcap       attention 2, output 5" && echo "$out" | grep -q "on 2 of 3 layers (0,2;"; then
  ok "info gemma2"; else bad "info gemma2" "$out"; fi

# window layers free what they no longer see: the same logits as with the
# slots kept, fewer slots (3 layers x 2 KV heads, 60 tokens: layer 1 all,
# layers 0 and 2 the 7 the next query sees)
toks=$(seq -s, 3 62)
"$kv" logits --model "$tmp/gemma2_swa8_cap.gguf" --tokens "$toks" --mode decode --out "$tmp/trim.f32" --stats \
  > "$tmp/trim.txt" 2>&1 || bad "logits --stats" "$(cat "$tmp/trim.txt")"
"$kv" logits --model "$tmp/gemma2_swa8_cap.gguf" --tokens "$toks" --mode decode --out "$tmp/keep.f32" --stats \
  --swa-keep > "$tmp/keep.txt" 2>&1 || bad "logits --swa-keep" "$(cat "$tmp/keep.txt")"
if cmp -s "$tmp/trim.f32" "$tmp/keep.f32" && grep -qx "kv_slots 148" "$tmp/trim.txt" && grep -qx "kv_slots 360" "$tmp/keep.txt"; then
  ok "window layers freed: same logits, 148 slots instead of 360"
else bad "window layers freed" "$(cat "$tmp/trim.txt" "$tmp/keep.txt")"; fi

cat > "$tmp/g2.ini" <<INI
[experiment]
name = g2
seed = 7
db = $tmp/g2.db
[model g2]
path = $tmp/gemma2_swa8_cap.gguf
chat = none
[task passkey]
kind = passkey
lengths = 120
depths = 50
per_cell = 2
max_new_tokens = 4
[policy full]
policy = full
[policy h2o]
policy = h2o
[sweep]
models = g2
tasks = passkey
policies = full, h2o
budgets = 64
INI
if "$kv" run "$tmp/g2.ini" >/dev/null 2>"$tmp/run.err"; then
  out=$("$kv" report --db "$tmp/g2.db" 2>&1)
  n=$(echo "$out" | grep -c "> g2: layers 0,2 attend to their last 8 tokens")
  if [ "$n" = 1 ]; then ok "report names the windowed layers once"; else bad "report windowed layers ($n)" "$out"; fi
else
  bad "run on gemma2" "$(cat "$tmp/run.err")"
fi

# a Mistral v7 Tekken template's default system message reaches the prompt
# when the experiment gives no system message (read from the model's text)
for mode in auto none; do
  sed -e "s|^name = g2|name = tekken_$mode|" -e "s|^db = .*|db = $tmp/tekken.db|" \
      -e "s|^path = .*|path = $tmp/tekken.gguf|" -e "s|^chat = none|chat = $mode|" \
      -e "s|^policies = full, h2o|policies = full|" "$tmp/g2.ini" > "$tmp/tekken_$mode.ini"
  "$kv" run "$tmp/tekken_$mode.ini" -q >/dev/null 2>"$tmp/tekken_$mode.err" || bad "tekken $mode run" "$(cat "$tmp/tekken_$mode.err")"
done
# the wrap's tokens come out of the context's share of the length: the
# default message (77 characters) and the tags displace context characters
cut=$(sqlite3 "$tmp/tekken.db" "SELECT group_concat(x, ' ') FROM (SELECT max(s.cut_chars) AS x, r.spec LIKE '%chat=mistral-v7-tekken@%' AS t FROM samples s JOIN runs r ON r.id = s.run GROUP BY t ORDER BY t)")
set -- $cut
if [ $# = 2 ] && [ $(( $2 - $1 )) -gt 77 ]; then ok "v7 Tekken default system message in the prompt (context cut $1 -> $2 chars)"
else bad "v7 Tekken default system message" "$cut"; fi

expect_fail "unknown arch key refused" 1 "metadata key 'qwen2.attention.scale' is not supported" -- \
  "$kv" info "$tmp/unknown_key.gguf"
expect_fail "unknown rope scaling refused" 1 "rope.scaling.type 'longrope' is not supported" -- \
  "$kv" info "$tmp/scaling.gguf"
expect_fail "mixture of experts refused" 1 "qwen2.expert_count' = 8: mixture-of-experts" -- "$kv" info "$tmp/moe.gguf"
expect_fail "unread tensor refused" 1 "tensor 'blk.0.attn_q_norm.weight' is not part of qwen2" -- \
  "$kv" info "$tmp/extra_tensor.gguf"
expect_fail "re-writing qwen2 refused" 1 "re-writing a qwen2 model is not supported" -- \
  "$kv" convert "$tmp/qwen2_bias_gqa2.gguf" "$tmp/out.gguf" --type f16
[ -e "$tmp/out.gguf" ] && bad "a refused convert left a file"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
