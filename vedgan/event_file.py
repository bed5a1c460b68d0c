"""TensorBoard event files, written without TensorFlow, tensorboardX or protobuf.

An event file is a sequence of TFRecords, each holding one serialized ``Event`` protobuf:

* a record: ``uint64 length | uint32 masked_crc32c(length bytes) | data |
  uint32 masked_crc32c(data)``, integers little-endian;
* the first event of a file has ``file_version = "brain.Event:2"``; every other one a
  ``summary`` of one or more values at a ``step`` and ``wall_time`` (UNIX seconds).

Only the few protobuf fields vedgan writes are encoded here, by hand (field numbers of
TensorBoard's ``event.proto``, ``summary.proto``, ``tensor.proto``):

========================  ====  ==================================================
message                   no.   field
========================  ====  ==================================================
Event                     1     ``wall_time`` (double), 2 ``step`` (int64),
                                3 ``file_version`` (string), 5 ``summary``
Summary                   1     ``value`` (repeated Summary.Value)
Summary.Value             1     ``tag``, 2 ``simple_value`` (float), 4 ``image``,
                                8 ``tensor``, 9 ``metadata``
Summary.Image             1     ``height``, 2 ``width``, 3 ``colorspace`` (int32),
                                4 ``encoded_image_string`` (bytes)
SummaryMetadata           1     ``plugin_data``: 1 ``plugin_name`` (string)
TensorProto               1     ``dtype`` (enum; 7 = DT_STRING), 2 ``tensor_shape``,
                                8 ``string_val`` (repeated bytes)
========================  ====  ==================================================

Importing this module imports only the standard library and vedgan.errors (no torch, unlike
tensorboardX).
"""
from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time

from vedgan import errors

#: the reflected CRC-32C (Castagnoli) polynomial
CRC32C_POLY = 0x82F63B78
#: added to the rotated CRC of a TFRecord's length and data (TFRecord's "masked" CRC)
CRC_MASK_DELTA = 0xA282EAD8
#: the ``file_version`` of the first event of every file
FILE_VERSION = "brain.Event:2"
#: ``TensorProto.dtype`` of a string tensor
DT_STRING = 7
#: the 8 bytes every PNG file starts with
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: ``Summary.Image.colorspace`` of each PNG colour type (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA)
PNG_COLORSPACE = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5
_FILE_NUMBERS = itertools.count()


def _crc32c_table() -> tuple[int, ...]:
  """The 256 CRCs of one byte each (byte-at-a-time table of the reflected polynomial)."""
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (CRC32C_POLY if crc & 1 else 0)
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """The CRC-32C (Castagnoli) of ``data`` as an unsigned 32-bit int.

  >>> hex(crc32c(b"123456789"))
  '0xe3069283'
  """
  crc, table = 0xFFFFFFFF, _CRC32C_TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC: the CRC-32C rotated right by 15 bits plus ``CRC_MASK_DELTA``."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
  """One TFRecord: ``data`` framed by its length and the masked CRCs of both."""
  header = struct.pack("<Q", len(data))
  return (header + struct.pack("<I", masked_crc32c(header)) + data
          + struct.pack("<I", masked_crc32c(data)))


def varint(value: int) -> bytes:
  """The protobuf base-128 varint of an int64 (negative values as 10-byte two's complement).

  >>> varint(300).hex()
  'ac02'
  """
  value &= 0xFFFFFFFFFFFFFFFF
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return varint(field << 3 | wire_type)


def int_field(field: int, value: int) -> bytes:
  """A varint field (int32, int64 or enum)."""
  return _key(field, _WIRE_VARINT) + varint(int(value))


def bytes_field(field: int, value: bytes | str) -> bytes:
  """A length-delimited field: bytes, a UTF-8 string or an encoded sub-message."""
  if isinstance(value, str):
    value = value.encode("utf-8")
  return _key(field, _WIRE_BYTES) + varint(len(value)) + value


def double_field(field: int, value: float) -> bytes:
  """A ``double`` field (fixed64, little-endian IEEE 754)."""
  return _key(field, _WIRE_FIXED64) + struct.pack("<d", value)


def float_field(field: int, value: float) -> bytes:
  """A ``float`` field (fixed32); values beyond float32's range become +-inf."""
  try:
    packed = struct.pack("<f", value)
  except OverflowError:
    packed = struct.pack("<f", math.copysign(math.inf, value))
  return _key(field, _WIRE_FIXED32) + packed


def event(wall_time: float, step: int = 0, *, file_version: str | None = None,
          values: list[bytes] | None = None) -> bytes:
  """A serialized ``Event``: the file-version event, or a summary of ``values`` (each an
  encoded ``Summary.Value``, see :func:`scalar_value` and the like)."""
  out = double_field(1, wall_time) + int_field(2, step)
  if file_version is not None:
    out += bytes_field(3, file_version)
  if values is not None:
    out += bytes_field(5, b"".join(bytes_field(1, v) for v in values))
  return out


def scalar_value(tag: str, value: float) -> bytes:
  """A ``Summary.Value`` holding a scalar (``simple_value``, float32)."""
  return bytes_field(1, tag) + float_field(2, float(value))


def text_value(tag: str, text: str) -> bytes:
  """A ``Summary.Value`` of TensorBoard's text plugin: a scalar string tensor (markdown)."""
  tensor = int_field(1, DT_STRING) + bytes_field(2, b"") + bytes_field(8, text)
  metadata = bytes_field(1, bytes_field(1, "text"))
  return bytes_field(1, tag) + bytes_field(8, tensor) + bytes_field(9, metadata)


def png_header(data: bytes) -> tuple[int, int, int]:
  """``(width, height, colorspace)`` read off a PNG's IHDR chunk."""
  if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 26:
    raise errors.DataError("not a PNG file (no PNG signature and IHDR chunk at its start)")
  width, height, _, color_type = struct.unpack(">IIBB", data[16:26])
  if color_type not in PNG_COLORSPACE:
    raise errors.DataError(f"PNG colour type {color_type} is not one of 0, 2, 3, 4, 6")
  return width, height, PNG_COLORSPACE[color_type]


def image_value(tag: str, png: bytes) -> bytes:
  """A ``Summary.Value`` holding an image: the PNG bytes as they are, with their size."""
  width, height, colorspace = png_header(png)
  image = (int_field(1, height) + int_field(2, width) + int_field(3, colorspace)
           + bytes_field(4, png))
  return bytes_field(1, tag) + bytes_field(4, image)


class EventFileWriter:
  """Appends events to a new file ``<logdir>/events.out.tfevents.<time>.<host>.<pid>.<n>``.

  Writes are buffered in memory and reach the file on :meth:`flush`, :meth:`close`, when
  the buffer fills, or at the first write ``flush_secs`` after the last flush (so a
  running TensorBoard sees a long run progress); nothing is fsync'ed.
  """

  def __init__(self, logdir: str, flush_secs: float = 120.0):
    os.makedirs(logdir, exist_ok=True)
    self.flush_secs = flush_secs
    self._last_flush = time.monotonic()
    while True:
      name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
              f".{os.getpid()}.{next(_FILE_NUMBERS)}")
      self.path = os.path.join(logdir, name)
      try:
        self._file = open(self.path, "xb", buffering=1 << 16)  # pylint: disable=consider-using-with
        break
      except FileExistsError:
        continue
    self._write(event(time.time(), file_version=FILE_VERSION))
    self.flush()

  def _write(self, serialized_event: bytes) -> None:
    self._file.write(tfrecord(serialized_event))
    if time.monotonic() - self._last_flush > self.flush_secs:
      self.flush()

  def add_values(self, step: int, values: list[bytes], wall_time: float | None = None) -> None:
    """Writes one summary event of encoded ``Summary.Value`` s at ``step``."""
    self._write(event(time.time() if wall_time is None else wall_time, int(step),
                      values=values))

  def add_scalars(self, scalars: dict[str, float], step: int) -> None:
    """Writes ``{tag: value}`` as one event at ``step``."""
    self.add_values(step, [scalar_value(tag, value) for tag, value in scalars.items()])

  def add_text(self, tag: str, text: str, step: int) -> None:
    self.add_values(step, [text_value(tag, text)])

  def add_png(self, tag: str, path: str, step: int) -> None:
    """Adds the PNG file at ``path`` as an image (its bytes, not re-encoded)."""
    with open(path, "rb") as f:
      png = f.read()
    self.add_values(step, [image_value(tag, png)])

  def flush(self) -> None:
    self._file.flush()
    self._last_flush = time.monotonic()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()
