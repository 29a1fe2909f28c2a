"""What the unit tests' tiny embedding models (``create_embedding_model("test_resnet", width)``) share."""

# The eval transform of an embedder.json for the 32-px test models.
TRANSFORM = {
    "input_size": [3, 32, 32],
    "interpolation": "bilinear",
    "mean": [0.5] * 3,
    "std": [0.5] * 3,
    "crop_pct": 1.0,
    "crop_mode": "center",
}
