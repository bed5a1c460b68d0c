"""Prepare TFDS datasets and print their statistics.

    python -m vedgan.data.prepare daily_dialog
    python -m vedgan.data.prepare mojitalk_twitter --manual_dir ~/Downloads
    python -m vedgan.data.prepare persona_chat/both_original opensubtitles/en_10m
    python -m vedgan.data.prepare --all --json stats.json
    python -m vedgan.data.prepare sst2 --force_checksums_validation  # verified downloads only
    python -m vedgan.data.prepare opensubtitles/en_1m --register_checksums  # (a checkout)

For every split: examples, distinct dialogues, mean history turns, mean
response / text length in whitespace words, distinct lower-cased words, and
the lines the builder skipped (by reason). A missing dataset prints one line
saying where to get it and where to put it, and the exit status is 1.

Downloads are checked against the builder's ``checksums.tsv`` (TFDS's convention);
``--register_checksums`` records the sizes and sha256 of what it downloads there (TFDS's
``register_checksums``: the builder's folder must be writable), and
``--force_checksums_validation`` refuses a URL that has no entry (``docs/data.md``).
"""
from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np

from vedgan.data import sources
from vedgan.errors import VedganError


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  return str(value)


def split_stats(records) -> dict:
  """Statistics of one split (a ``Sequence[dict]`` of builder records)."""
  rows = sources._bulk(records)  # pylint: disable=protected-access
  words = collections.Counter()
  lengths, turns, dialogues = [], [], set()
  for r in rows:
    text = _text(r["text"] if "text" in r else r["response"])
    tokens = text.split()
    lengths.append(len(tokens))
    words.update(t.lower() for t in tokens)
    if "history" in r:
      history = [_text(h) for h in r["history"]]
      turns.append(len(history))
      for h in history:
        words.update(t.lower() for t in h.split())
    if "dialogue_id" in r:
      dialogues.add(_text(r["dialogue_id"]))
  out = {"examples": len(rows),
         "mean_words": round(float(np.mean(lengths)), 2) if lengths else 0.0,
         "max_words": int(max(lengths, default=0)),
         "distinct_words": len(words)}
  if dialogues:
    out["dialogues"] = len(dialogues)
  if turns:
    out["mean_history_turns"] = round(float(np.mean(turns)), 2)
  return out


def prepare(name: str, data_dir: str = "", manual_dir: str = "",
            register_checksums: bool = False,
            force_checksums_validation: bool = False) -> dict:
  """Builds ``name`` (if needed) and returns ``{split: stats}`` + skips.

  ``register_checksums`` / ``force_checksums_validation``: see
  :func:`vedgan.data.sources.prepare_builder`.
  """
  config = {"name": name, "data_dir": data_dir, "manual_dir": manual_dir}
  builder = sources.prepare_builder(
      config, verbose=True, register_checksums=register_checksums,
      force_checksums_validation=force_checksums_validation)
  skipped = dict(builder.info.metadata.get("skipped", {})) if (
      builder.info.metadata) else {}
  out = {"data_dir": str(builder.data_dir), "splits": {}}
  for split in builder.info.splits:
    stats = split_stats(builder.as_data_source(split=split))
    stats["skipped"] = dict(skipped.get(split, {}))
    out["splits"][split] = stats
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="*",
                      help="builder names (name or name/config)")
  parser.add_argument("--all", action="store_true",
                      help="every registered builder")
  parser.add_argument("--data_dir", default="",
                      help="TFDS data dir (default $VEDGAN_DATA_DIR, else "
                      "$TFDS_DATA_DIR, else ~/.cache/vedgan/tfds)")
  parser.add_argument("--manual_dir", default="",
                      help="folder with manually downloaded files")
  parser.add_argument("--register_checksums", action="store_true",
                      help="record size and sha256 of every download in the builder's "
                      "checksums.tsv (rebuilds the dataset)")
  parser.add_argument("--force_checksums_validation", action="store_true",
                      help="refuse a download whose URL has no checksums.tsv entry")
  parser.add_argument("--json", help="also write the statistics here")
  args = parser.parse_args(argv)
  names = sorted(sources.BUILDERS) if args.all else args.names
  if not names:
    parser.error("name a dataset, or --all")
  results, failed = {}, False
  for name in names:
    try:
      results[name] = prepare(name, args.data_dir, args.manual_dir,
                              register_checksums=args.register_checksums,
                              force_checksums_validation=args.force_checksums_validation)
    except VedganError as e:
      print(str(e) if name.split("/")[0] in str(e) else f"{name}: {e}",
            file=sys.stderr)
      failed = True
      continue
    print(f"{name}  ({results[name]['data_dir']})")
    for split, stats in results[name]["splits"].items():
      print(f"  {split:<11} " + ", ".join(
          f"{k}={v}" for k, v in stats.items()))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2, ensure_ascii=False)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
