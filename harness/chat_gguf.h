/* chat_gguf.h - a GGUF model's chat template as a ds_chat_source.
 *
 * Here, not in datasets/: a GGUF is the engine's to read, and datasets/
 * stands on base/ alone (docs/ARCHITECTURE.md, "Layers"). */
#ifndef HX_CHAT_GGUF_H
#define HX_CHAT_GGUF_H

#include "../datasets/chat.h"

/* tokenizer.chat_template and the texts of the tokens whose ids
 * tokenizer.ggml.bos_token_id / eos_token_id hold; each NULL when the file
 * lacks it (see ds_chat_source). Errors: the GGUF's own (it names the file),
 * KV_ENOMEM. */
int hx_chat_source_gguf(const char *path, ds_chat_source *out);

#endif
