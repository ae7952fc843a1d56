"""RouteLLM's side of the import parity (throwaway venv): save an MFModel as RouteLLM does, score it.

    python routellm_export.py OUT_DIR EMBEDDINGS.npy OUT.json PAIRS_JSON

The weights are random (seeded) at a scale that spreads the win rates; the prompt
embedding reaches MFModel.forward through its own OPENAI_CLIENT, answered in-process.
"""

import json
import sys
from types import SimpleNamespace

import numpy as np
import torch
from routellm.routers.matrix_factorization import model as mf_module
from routellm.routers.matrix_factorization.model import MODEL_IDS, MFModel

out, embeddings_path, result_path, pairs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
torch.manual_seed(0)
model = MFModel(dim=128, num_models=64, text_dim=1536, num_classes=1, use_proj=True)
with torch.no_grad():
    model.text_proj[0].weight.mul_(100)  # Linear's default init is small: spread the win rates
    model.classifier[0].weight.mul_(10)
model = model.eval()
model.save_pretrained(out)

embeddings = np.load(embeddings_path)
current = {}


class Embeddings:
    def create(self, input, model):
        return SimpleNamespace(data=[SimpleNamespace(embedding=current["vector"].tolist())])


mf_module.OPENAI_CLIENT = SimpleNamespace(embeddings=Embeddings())
results = {}
for strong, weak in pairs:
    rates = []
    for vector in embeddings:
        current["vector"] = vector
        rates.append(model.pred_win_rate(MODEL_IDS[strong], MODEL_IDS[weak], "prompt"))
    results[f"{strong}|{weak}"] = rates
with open(result_path, "w") as f:
    json.dump(results, f)
