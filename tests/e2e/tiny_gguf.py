"""Write a tiny llama-architecture GGUF whose greedy reply is a fixed text.

So that a real llama.cpp server can stream a known answer in tests: the
vocabulary is byte-level BPE (one token per byte, GPT-2's byte-to-unicode
mapping) plus ChatML's control tokens; the transformer layer writes nothing
to the residual stream (zero output projections), so the next token depends
only on the current one; embeddings are one-hot and the output matrix maps
each reply character to the next, ending in <|im_end|>. Whatever the prompt,
the last token of ChatML's assistant header ("\\n") starts the chain.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

REPLY = "Howdy pal!"  # every character distinct: a one-token memory can spell it
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_tokens() -> list[str]:
    """GPT-2's reversible byte -> printable unicode mapping, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def write_tiny_gguf(path: Path, reply: str = REPLY, context: int = 512) -> str:
    """Write the model; return the reply it gives (any text whose characters are all distinct, without a newline)."""
    import gguf

    if len(set(reply)) != len(reply) or "\n" in reply:
        raise ValueError(f"{reply!r}: a one-token memory can only spell text whose characters are all distinct")

    byte_tokens = _byte_tokens()
    # llama.cpp insists on at least one merge: join two NUL bytes, which no test text contains.
    merge = f"{byte_tokens[0]} {byte_tokens[0]}"
    tokens = [*byte_tokens, "<|im_start|>", "<|im_end|>", byte_tokens[0] * 2]
    im_start, im_end = 256, 257
    n_vocab, n_embd, n_head, n_ff = len(tokens), 264, 4, 32  # one-hot embeddings need n_embd >= n_vocab
    token_types = [gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL]

    embeddings = np.zeros((n_vocab, n_embd), np.float32)
    embeddings[np.arange(n_vocab), np.arange(n_vocab)] = 1.0
    # output[next, current] = 1: after RMS norm, the logit of the next token is ~sqrt(n_embd).
    output = np.zeros((n_vocab, n_embd), np.float32)
    chain = [ord("\n"), *list(reply.encode()), im_end]
    for current, following in itertools.pairwise(chain):
        output[following, current] = 10.0

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("routestack-tiny-test")
    writer.add_context_length(context)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges([merge])
    writer.add_bos_token_id(im_start)
    writer.add_eos_token_id(im_end)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)

    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", embeddings)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    writer.add_tensor("output.weight", output)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, np.float32))
    for name in ("attn_q", "attn_k", "attn_v"):
        writer.add_tensor(f"blk.0.{name}.weight", (rng.normal(size=(n_embd, n_embd)) * 0.01).astype(np.float32))
    writer.add_tensor("blk.0.attn_output.weight", np.zeros((n_embd, n_embd), np.float32))  # writes nothing
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, np.float32))
    writer.add_tensor("blk.0.ffn_gate.weight", (rng.normal(size=(n_ff, n_embd)) * 0.01).astype(np.float32))
    writer.add_tensor("blk.0.ffn_up.weight", (rng.normal(size=(n_ff, n_embd)) * 0.01).astype(np.float32))
    writer.add_tensor("blk.0.ffn_down.weight", np.zeros((n_embd, n_ff), np.float32))  # writes nothing
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return reply
