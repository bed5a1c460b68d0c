"""Data parallelism: a 1-D ``"data"`` mesh, pmap-style per-device steps under shard_map.

Per-device step functions are written as with ``pmap``: they see their local
slice of the batch and the full (replicated) state, and average what must be
global with :func:`pmean` / :func:`psum` over :data:`AXIS`. :func:`data_parallel`
wraps such a function in ``jax.jit(jax.shard_map(...))``. Multi-host runs call
:func:`initialize_distributed` first and feed each process's own rows through
:func:`shard_batch`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vedgan.errors import ConfigError

AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, join: bool = True) -> None:
  """Joins a multi-process job with ``jax.distributed.initialize``; call before any JAX work.

  With no arguments JAX finds its peers itself (Cloud TPU pods and slices,
  SLURM, Open MPI, Kubernetes) and ``JAX_COORDINATOR_ADDRESS`` is honoured.
  Elsewhere (e.g. several processes on one or more CPU/GPU machines) give all
  three: ``coordinator_address`` (``"host:port"`` of process 0, the same on
  every process), ``num_processes`` and this process's ``process_id`` in
  ``[0, num_processes)``. On CPU, JAX runs the cross-process collectives with
  gloo over TCP (``jax_cpu_collectives_implementation``, gloo by default).
  Calling it again in a process that has already joined does nothing;
  ``join=False`` only checks the arguments.

  Raises:
    ConfigError: a bad or incomplete address / count / id, or a failed join.
  """
  if jax.distributed.is_initialized():
    return
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  if num_processes is not None and int(num_processes) < 1:
    raise ConfigError(f"num_processes={num_processes} must be at least 1")
  if process_id is not None and num_processes is not None and not (
      0 <= int(process_id) < int(num_processes)):
    raise ConfigError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
  if coordinator_address is not None and not _is_host_port(coordinator_address):
    raise ConfigError(f"coordinator_address={coordinator_address!r} is not 'host:port'; give the "
                      "address and a free port of process 0, e.g. 10.0.0.2:8476")
  if not join:
    return
  try:
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=None if num_processes is None else int(num_processes),
        process_id=None if process_id is None else int(process_id))
  except (ValueError, TypeError, RuntimeError) as e:
    missing = [k for k, v in given.items() if v is None]
    hint = (f"set {', '.join(missing)} (or run where JAX detects them: TPU pod, SLURM, Open MPI)"
            if missing else "check that every process uses the same coordinator address and "
            "process count and that process 0 is reachable")
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise ConfigError(f"jax.distributed.initialize failed ({first}); {hint}") from None


def _is_host_port(address: str) -> bool:
  host, sep, port = str(address).rpartition(":")
  return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named ``"data"`` over ``devices`` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def check_batch_size(global_batch_size: int, mesh: Mesh, name: str = "train.batch_size") -> None:
  """Raises a one-line :class:`ConfigError` unless the batch splits evenly over devices and hosts."""
  n = mesh.devices.size
  if global_batch_size <= 0 or global_batch_size % n:
    raise ConfigError(
        f"{name}={global_batch_size} is not divisible by the {n} devices of the data mesh; "
        f"use a multiple of {n} (e.g. --config.{name}={max(n, global_batch_size // n * n or n)})")
  if global_batch_size % jax.process_count():
    raise ConfigError(f"{name}={global_batch_size} is not divisible by the "
                      f"{jax.process_count()} processes")


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf of ``tree`` on all devices of ``mesh`` (replicated)."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Builds global arrays split on their first axis from this process's rows."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def data_parallel(fn: Callable, mesh: Mesh, donate_state: bool = True) -> Callable:
  """``fn(state, batch) -> (state, metrics)`` per device -> a jitted global step.

  State and metrics are replicated (``fn`` must make them identical on every
  device, e.g. by averaging gradients with :func:`pmean`); the batch is split on
  its first axis.
  """
  sharded = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()),
                          check_vma=False)
  return jax.jit(sharded, donate_argnums=(0,) if donate_state else ())


def data_parallel_steps(fn: Callable, mesh: Mesh, donate_state: bool = True) -> Callable:
  """Like :func:`data_parallel` for a per-device ``fn(state, batches) -> (state, outputs)``
  whose batch leaves are stacked ``[K, B, ...]`` (K consecutive steps, e.g. run by
  ``lax.scan``): the batch is split on its *second* axis, state and outputs are replicated.
  """
  sharded = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(None, AXIS)), out_specs=(P(), P()),
                          check_vma=False)
  return jax.jit(sharded, donate_argnums=(0,) if donate_state else ())


def data_parallel_reduce(fn: Callable, mesh: Mesh) -> Callable:
  """``fn(state, batch) -> stats`` per device, summed over devices: a jitted eval step."""

  def summed(state, batch):
    return psum(fn(state, batch))

  return jax.jit(jax.shard_map(summed, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(),
                               check_vma=False))


def pmean(tree: Any) -> Any:
  """Mean over the data axis (inside a per-device function)."""
  return jax.lax.pmean(tree, AXIS)


def psum(tree: Any) -> Any:
  """Sum over the data axis (inside a per-device function)."""
  return jax.lax.psum(tree, AXIS)


def device_rng(key: jax.Array) -> jax.Array:
  """A key distinct per device: ``fold_in(key, axis_index("data"))``."""
  return jax.random.fold_in(key, jax.lax.axis_index(AXIS))
