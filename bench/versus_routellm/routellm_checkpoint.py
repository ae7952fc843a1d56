"""Save our weights as a RouteLLM MFModel checkpoint, for its openai_server (throwaway venv).

    python routellm_checkpoint.py WEIGHTS.npz OUT_DIR
"""

import sys

import numpy as np
import torch
from routellm.routers.matrix_factorization.model import MODEL_IDS, MFModel

w = np.load(sys.argv[1])
out = sys.argv[2]
P = w["P"].copy()
s, k = int(w["strong"]), int(w["weak"])
# RouteLLM names the pair by its MODEL_IDS: put our strong/weak rows at those indices.
for ours, theirs in ((s, MODEL_IDS["gpt-4-1106-preview"]), (k, MODEL_IDS["mixtral-8x7b-instruct-v0.1"])):
    P[[ours, theirs]] = P[[theirs, ours]]
model = MFModel(dim=P.shape[1], num_models=P.shape[0], text_dim=w["W"].shape[1], num_classes=1, use_proj=True)
with torch.no_grad():
    model.P.weight.copy_(torch.from_numpy(P))
    model.text_proj[0].weight.copy_(torch.from_numpy(w["W"]))
    model.classifier[0].weight.copy_(torch.from_numpy(w["w"][None, :]))
model.save_pretrained(out)
