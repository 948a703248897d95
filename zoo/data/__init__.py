"""Text data: corpora (TFDS array_record), SentencePiece tokenizers, the tokenized store,
grain pipelines."""

from zoo.data.cache import cache_root
from zoo.data.pipeline import (KEYS, EvalSet, Windows, make_eval_set, make_train_iterator,
                               train_windows)
from zoo.data.sources import Corpus, load_corpus
from zoo.data import token_counts
from zoo.data.store import TokenStore, open_store
from zoo.data.token_counts import train_token_counts
from zoo.data.tokenizer import TOKENIZER_FILE, Tokenizer, load_tokenizer

__all__ = [
    "KEYS", "TOKENIZER_FILE", "Corpus", "EvalSet", "TokenStore", "Tokenizer", "Windows",
    "cache_root", "load_corpus", "load_tokenizer", "make_eval_set", "make_train_iterator",
    "open_store", "token_counts", "train_token_counts", "train_windows",
]
