"""TensorBoard event files written by hand (vedgan.event_file) and MetricWriter's use of them.

Checked three ways: encodings against hand-computed bytes and published CRC-32C vectors; the
files parsed back by a reader in this file (its own bitwise CRC, its own protobuf decoder);
and, where the ``tensorboard`` package is installed, by TensorBoard's own EventAccumulator.
Budget: a few seconds (one subprocess).
"""
import doctest
import io
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from vedgan import errors
from vedgan import event_file as ef
from vedgan.writers import MetricWriter


# --- encodings -------------------------------------------------------------------------------

def test_crc32c_matches_the_published_test_vectors():
  assert ef.crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
  assert ef.crc32c(b"") == 0
  # RFC 3720 (iSCSI), appendix B.4
  assert ef.crc32c(bytes(32)) == 0x8A9136AA
  assert ef.crc32c(b"\xff" * 32) == 0x62A8AB43
  assert ef.crc32c(bytes(range(32))) == 0x46DD794E
  assert ef.crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C


def test_the_modules_examples_run():
  result = doctest.testmod(ef)
  assert result.attempted >= 2 and result.failed == 0


def test_masked_crc_rotates_right_by_15_and_adds_the_delta():
  # crc32c(b"123456789") = 0xE3069283: its top 17 bits are 0x1C60D, its low 15 bits 0x1283;
  # rotated right by 15: 0x1283 << 17 | 0x1C60D = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5
  assert ef.masked_crc32c(b"123456789") == 0xC78AB0E5


def test_varints_and_fields_encode_as_computed_by_hand():
  assert ef.varint(0) == b"\x00"
  assert ef.varint(1) == b"\x01"
  assert ef.varint(127) == b"\x7f"
  assert ef.varint(128) == b"\x80\x01"
  assert ef.varint(300) == b"\xac\x02"  # 300 = 0b10_0101100: 0x2c | 0x80, then 0b10
  assert ef.varint(2**32) == b"\x80\x80\x80\x80\x10"
  assert ef.varint(-1) == b"\xff" * 9 + b"\x01"  # int64 two's complement, 10 bytes
  # key = field << 3 | wire type
  assert ef.int_field(1, 150) == b"\x08\x96\x01"
  assert ef.int_field(2, 3) == b"\x10\x03"
  assert ef.bytes_field(2, "testing") == b"\x12\x07testing"
  assert ef.bytes_field(16, b"") == b"\x82\x01\x00"  # a two-byte key: (16 << 3 | 2) = 130
  assert ef.double_field(1, 1.0) == b"\x09" + b"\x00" * 6 + b"\xf0\x3f"
  assert ef.float_field(2, 1.0) == b"\x15\x00\x00\x80\x3f"
  assert ef.float_field(2, -2.5) == b"\x15\x00\x00\x20\xc0"
  # beyond float32's range: +-inf instead of struct's OverflowError
  assert ef.float_field(2, 1e300) == b"\x15\x00\x00\x80\x7f"
  assert ef.float_field(2, -1e300) == b"\x15\x00\x00\x80\xff"


def test_an_event_and_its_record_encode_as_computed_by_hand():
  value = ef.scalar_value("a", 1.0)
  assert value == b"\x0a\x01a" + b"\x15\x00\x00\x80\x3f"  # tag 1, simple_value 2
  # Event: wall_time (1, double 2.0), step (2, varint 3), summary (5) = value (1) of 8 bytes
  expected = (b"\x09" + b"\x00" * 7 + b"\x40" + b"\x10\x03"
              + b"\x2a\x0a" + b"\x0a\x08" + value)
  assert ef.event(2.0, 3, values=[value]) == expected
  assert ef.event(0.0, file_version="brain.Event:2") == (
      b"\x09" + b"\x00" * 8 + b"\x10\x00" + b"\x1a\x0dbrain.Event:2")
  record = ef.tfrecord(expected)
  assert record[:8] == struct.pack("<Q", len(expected))
  assert record[12:-4] == expected and len(record) == 16 + len(expected)
  assert struct.unpack("<I", record[8:12])[0] == _masked_crc(record[:8])
  assert struct.unpack("<I", record[-4:])[0] == _masked_crc(expected)


def _png(path, mode, size=(30, 20)):
  """A random PNG of ``size`` = (width, height) in PIL ``mode``; its path."""
  channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
  pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], channels), np.uint8)
  Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path)
  return path


@pytest.mark.parametrize("mode,colorspace", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_png_header_gives_width_height_and_colorspace(tmp_path, mode, colorspace):
  data = open(_png(tmp_path / "a.png", mode, (30, 20)), "rb").read()
  assert ef.png_header(data) == (30, 20, colorspace)


def test_a_file_that_is_not_a_png_is_refused_in_one_line(tmp_path):
  Image.new("RGB", (4, 4)).save(tmp_path / "a.jpg")
  png = open(_png(tmp_path / "a.png", "RGB"), "rb").read()
  for data in (open(tmp_path / "a.jpg", "rb").read(), b"G" + png[1:], png[:25]):
    with pytest.raises(errors.DataError, match="not a PNG file"):
      ef.png_header(data)


# --- a reader of this file's own ----------------------------------------------------------

def _masked_crc(data):
  """TFRecord's masked CRC-32C, computed bit by bit (independent of ef's table)."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(path):
  """The records of a TFRecord file, every length and CRC checked."""
  data, out, pos = open(path, "rb").read(), [], 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == _masked_crc(header)
    body = data[pos + 12:pos + 12 + length]
    assert len(body) == length
    assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == _masked_crc(body)
    out.append(body)
    pos += 16 + length
  assert pos == len(data)
  return out


def _decode(data):
  """A protobuf message as ``{field number: [values]}`` (varints as ints, fixed64 as
  double, fixed32 as float, length-delimited as bytes)."""
  fields, pos = {}, 0
  while pos < len(data):
    key, pos = _read_varint(data, pos)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _read_varint(data, pos)
    elif wire == 1:
      (value,), pos = struct.unpack("<d", data[pos:pos + 8]), pos + 8
    elif wire == 5:
      (value,), pos = struct.unpack("<f", data[pos:pos + 4]), pos + 4
    else:
      assert wire == 2, wire
      length, pos = _read_varint(data, pos)
      value, pos = data[pos:pos + length], pos + length
      assert len(value) == length
    fields.setdefault(field, []).append(value)
  assert pos == len(data)
  return fields


def _read_varint(data, pos):
  value = shift = 0
  while True:
    byte = data[pos]
    value |= (byte & 0x7F) << shift
    pos, shift = pos + 1, shift + 7
    if byte < 0x80:
      return value, pos


def _events(workdir):
  """``[(step, wall_time, {tag: decoded Summary.Value})]`` of the only event file of a run;
  checks that its first event is the file version."""
  tb = os.path.join(workdir, "tensorboard")
  (name,) = os.listdir(tb)
  assert name.startswith("events.out.tfevents.")
  events = [_decode(r) for r in _records(os.path.join(tb, name))]
  assert events[0][3] == [b"brain.Event:2"] and 5 not in events[0]
  out = []
  for e in events[1:]:
    (summary,) = e[5]
    values = {}
    for v in _decode(summary)[1]:
      v = _decode(v)
      values[v[1][0].decode()] = v
    out.append((e.get(2, [0])[0], e[1][0], values))
  return out


def _write_run(workdir):
  """Writes what a training run does: scalars, samples and two PNGs; their paths."""
  writer = MetricWriter(str(workdir))
  writer.scalars(0, "mle", "train", {"loss": 2.5, "lr": np.float32(0.125)})
  writer.scalars(1, "mle", "train", {"loss": 1.75, "lr": 0.25})
  writer.scalars(1, "mle", "validation", {"nll": np.array(-3.0), "bad": float("nan")})
  writer.samples(1, "mle", [("hi | there", "hello"), ("bye", "see you")])
  pngs = [_png(workdir / "curves.png", "RGBA", (30, 20)), _png(workdir / "bars.png", "RGB",
                                                              (7, 5))]
  writer.images(2, [str(p) for p in pngs])
  writer.close()
  writer.close()  # a second close does nothing
  return pngs


def test_a_run_reads_back_with_this_files_reader(tmp_path):
  pngs = _write_run(tmp_path)
  events = _events(str(tmp_path))
  scalars = [(s, {t: v[2][0] for t, v in vals.items()}) for s, _, vals in events
             if all(2 in v for v in vals.values())]
  assert scalars[:2] == [(0, {"train/loss": 2.5, "train/lr": 0.125}),
                         (1, {"train/loss": 1.75, "train/lr": 0.25})]
  (step, values), = scalars[2:]
  assert step == 1 and values["validation/nll"] == -3.0 and np.isnan(values["validation/bad"])
  (step, _, texts), = [e for e in events if "samples/text_summary" in e[2]]
  text = texts["samples/text_summary"]
  tensor, metadata = _decode(text[8][0]), _decode(text[9][0])
  assert step == 1 and tensor[1] == [7]  # DT_STRING
  assert _decode(metadata[1][0])[1] == [b"text"]
  assert tensor[8][0].decode().splitlines()[-2:] == ["| 1 | hi \\| there | hello |",
                                                    "| 2 | bye | see you |"]
  images = [(s, vals) for s, _, vals in events if any(t.startswith("plots/") for t in vals)]
  assert [s for s, _ in images] == [2, 2]
  for (_, vals), png, (width, height, colorspace) in zip(images, pngs,
                                                          [(30, 20, 4), (7, 5, 3)]):
    image = _decode(vals["plots/" + png.stem][4][0])
    assert image == {1: [height], 2: [width], 3: [colorspace], 4: [png.read_bytes()]}
  assert all(abs(wall - events[0][1]) < 60 for _, wall, _ in events)


def test_tensorboard_reads_the_run_back(tmp_path):
  """TensorBoard's own reader (it checks every CRC: without TensorFlow, its record reader is
  pure Python)."""
  pytest.importorskip("tensorboard")
  from tensorboard.backend.event_processing import \
      event_accumulator  # pylint: disable=import-outside-toplevel
  pngs = _write_run(tmp_path)
  acc = event_accumulator.EventAccumulator(
      str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
  acc.Reload()
  tags = acc.Tags()
  assert sorted(tags["scalars"]) == ["train/loss", "train/lr", "validation/bad",
                                     "validation/nll"]
  assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(0, 2.5), (1, 1.75)]
  assert [(e.step, e.value) for e in acc.Scalars("train/lr")] == [(0, 0.125), (1, 0.25)]
  assert [(e.step, e.value) for e in acc.Scalars("validation/nll")] == [(1, -3.0)]
  assert np.isnan(acc.Scalars("validation/bad")[0].value)
  assert tags["tensors"] == ["samples/text_summary"]
  assert acc.SummaryMetadata("samples/text_summary").plugin_data.plugin_name == "text"
  (text,) = acc.Tensors("samples/text_summary")
  assert text.step == 1 and text.tensor_proto.dtype == 7
  assert text.tensor_proto.string_val[0].decode().endswith("| 2 | bye | see you |")
  assert sorted(tags["images"]) == ["plots/bars", "plots/curves"]
  for png, size in zip(pngs, [(30, 20), (7, 5)]):
    (image,) = acc.Images("plots/" + png.stem)
    assert (image.step, (image.width, image.height)) == (2, size)
    assert image.encoded_image_string == png.read_bytes()
    assert Image.open(io.BytesIO(image.encoded_image_string)).size == size


def test_writes_are_buffered_until_flush(tmp_path):
  writer = ef.EventFileWriter(str(tmp_path))
  on_disk = lambda: len(_records(writer.path))  # pylint: disable=unnecessary-lambda-assignment
  assert on_disk() == 1  # the file version, flushed when the file is created
  for step in range(50):
    writer.add_scalars({"loss": step}, step)
  assert on_disk() == 1  # no write to the file per scalar
  writer.flush()
  assert on_disk() == 51
  writer.add_text("t", "x", 0)
  writer.close()
  assert on_disk() == 52
  every = ef.EventFileWriter(str(tmp_path), flush_secs=0.0)  # flushes at every write
  every.add_scalars({"loss": 1.0}, 0)
  assert len(_records(every.path)) == 2
  every.close()
  assert every.path != writer.path and len(os.listdir(tmp_path)) == 2


# --- no torch ----------------------------------------------------------------------------------

def test_the_writer_imports_neither_torch_nor_tensorboardx(tmp_path):
  """A fresh interpreter creates a MetricWriter and writes through it; fake ``torch`` and
  ``tensorboardX`` packages first on the path leave a file behind if imported (so this means
  something where neither is installed)."""
  fakes = tmp_path / "fakes"
  for name in ("torch", "tensorboardX"):
    (fakes / name).mkdir(parents=True)
    (fakes / name / "__init__.py").write_text(
        f"open({str(tmp_path / (name + '.imported'))!r}, 'w').close()\n"
        f"raise ImportError('{name} was imported')\n")
  png = _png(tmp_path / "p.png", "RGB", (4, 3))
  code = ("import json, sys\n"
          "from vedgan.writers import MetricWriter\n"
          f"w = MetricWriter({str(tmp_path / 'run')!r})\n"
          "w.scalars(0, 'mle', 'train', {'loss': 1.0})\n"
          "w.samples(0, 'mle', [('a', 'b')])\n"
          f"w.images(0, [{str(png)!r}])\n"
          "w.close()\n"
          "print(json.dumps(sorted(sys.modules)))\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(fakes), str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  modules = json.loads(proc.stdout.strip().splitlines()[-1])
  assert "vedgan.event_file" in modules and "numpy" in modules  # the listing is real
  assert not [m for m in modules if m.split(".")[0] in ("torch", "tensorboardX")]
  assert not list(tmp_path.glob("*.imported"))
  assert len(_records(next((tmp_path / "run" / "tensorboard").iterdir()))) == 4  # version + 3
