"""The scorer pipeline: data, embeddings, MF training, calibration and evaluation."""
