"""Regenerates fasttext_tiny_gensim.bin and its expected vectors.

Not run by the tests (gensim is not a dependency).  Run from this folder with
gensim installed:  python make_fasttext_tiny.py
The expected vectors are gensim's own reading of the file
(``load_facebook_vectors``), an implementation independent of vedgan's.
"""
import json

from gensim.models import FastText
from gensim.models.fasttext import load_facebook_vectors, save_facebook_model

SENTS = [["héllo", "wörld", "the", "cat", "sat", "naïve", "日本語", "cat"],
         ["the", "dog", "ran", "héllo", "日本語"]] * 20

model = FastText(vector_size=8, window=2, min_count=1, min_n=2, max_n=4,
                 bucket=50, epochs=3, seed=1, workers=1)
model.build_vocab(corpus_iterable=SENTS)
model.train(corpus_iterable=SENTS, total_examples=len(SENTS), epochs=3)
save_facebook_model(model, "fasttext_tiny_gensim.bin")
kv = load_facebook_vectors("fasttext_tiny_gensim.bin")
with open("fasttext_tiny_gensim_vectors.json", "w", encoding="utf-8") as f:
  json.dump({w: [float(x) for x in kv[w]] for w in kv.index_to_key}, f,
            ensure_ascii=False, indent=0)
