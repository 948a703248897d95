"""The zoo: language-model architectures that separate parameter count from compute."""
