# The one place dependency versions are pinned.
# LibTorch comes from the PyPI torch wheel; the lent GPU machines run 2.11.0+cu130.
OLM_TORCH_VERSION=2.11.0
# The OLMo-core release the parity tests compare against.
OLM_OLMO_CORE_VERSION=3.0.0
OLM_SAFETENSORS_VERSION=0.8.0
# References for the Hugging Face import/export and tokenizer tests (test venv only).
OLM_TRANSFORMERS_VERSION=4.57.6
OLM_TOKENIZERS_VERSION=0.22.2
OLM_SENTENCEPIECE_VERSION=0.2.3
