"""Text data: corpora (TFDS array_record), SentencePiece tokenizers, grain pipelines."""

from zoo.data.cache import cache_root
from zoo.data.pipeline import KEYS, make_eval_iterator, make_train_iterator
from zoo.data.sources import Corpus, load_corpus
from zoo.data import token_counts
from zoo.data.token_counts import train_token_counts
from zoo.data.tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "KEYS", "Corpus", "Tokenizer", "cache_root", "load_corpus", "load_tokenizer",
    "make_eval_iterator", "make_train_iterator", "token_counts", "train_token_counts",
]
