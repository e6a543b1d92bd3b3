"""`pyaudit inspect`: one file's header (or one sharded training state's records) as a table
or as the JSON of CONTRACT.md."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from pyaudit.formats.dcp import DcpCheckpoint
from pyaudit.formats.deepspeed import DeepSpeedStep
from pyaudit.formats.torch_pickle import TorchCheckpoint
from pyaudit.headers import DTYPE_BITS, Header
from pyaudit.report.sizes import human_bytes, human_shape

SCHEMA = 1


def inspect_json(header: Header) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "path": header.path,
        "ok": header.ok,
        "error": None if header.ok else (header.error.reason if header.error else header.rule),
        "rule": header.rule,
        "error_tensor": None if header.error is None else header.error.tensor,
        "file_bytes": header.file_size,
        "header_bytes": header.header_size,
        "data_bytes": header.data_size if header.ok else None,
        "metadata": header.metadata,
        "tensors": {
            t.name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(t.data_offsets)}
            for t in (header.tensors.values() if header.ok else ())
        },
    }


def print_inspect(header: Header, console: Console) -> None:
    console.print(f"[bold]{header.path}[/bold]  {human_bytes(header.file_size)}")
    if not header.ok:
        error = header.error
        assert error is not None
        console.print(f"[bold red]INVALID[/bold red] ({error.rule}): {error.reason}")
        return
    console.print(
        f"header {header.header_size:,} bytes, tensor data {human_bytes(header.data_size)}"
    )
    if header.metadata:
        pairs = ", ".join(f"{k}={v}" for k, v in sorted(header.metadata.items()))
        console.print(f"__metadata__: {pairs}")
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("tensor", overflow="fold")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("size", justify="right")
    table.add_column("offsets", justify="right")
    for t in header.tensors.values():
        table.add_row(
            t.name,
            t.dtype,
            human_shape(t.shape),
            human_bytes(t.nbytes),
            f"{t.data_offsets[0]}-{t.data_offsets[1]}",
        )
    console.print(table)
    dtypes = Counter(t.dtype for t in header.tensors.values())
    mix = ", ".join(f"{n} {d}" for d, n in dtypes.most_common())
    console.print(
        f"[bold]{len(header)} tensors[/bold] ({mix or 'none'}), "
        f"{human_bytes(header.data_size)} of tensor data: [green]valid[/green]"
    )


# --- torch.save files (.bin, .pt): the pickle read as data ------------------------------


def torch_inspect_json(ckpt: TorchCheckpoint) -> dict[str, Any]:
    tensors = ckpt.tensors()
    return {
        "schema": SCHEMA,
        "path": ckpt.path,
        "format": "torch",
        "kind": ckpt.kind,
        "ok": ckpt.ok,
        "rule": ckpt.rule,
        "error": ckpt.message,
        "file_bytes": ckpt.file_size,
        "bytes_read": ckpt.bytes_read,
        "problems": [
            {"rule": p.rule, "tensor": p.tensor, "message": p.message} for p in ckpt.problems()
        ],
        "globals": [
            {"name": g.qualname, "count": g.uses, "kind": g.kind} for g in ckpt.globals()
        ],
        "tensors": {
            t.name: {
                "dtype": t.dtype,
                "shape": list(t.shape),
                "stride": list(t.stride),
                "storage": t.storage_key,
                "storage_offset": t.storage_offset,
            }
            for t in tensors
        },
    }


def print_torch_inspect(ckpt: TorchCheckpoint, console: Console) -> None:
    kind = {
        "zip": "torch zip checkpoint",
        "legacy": "legacy torch file",
        "pickle": "plain pickle",
    }.get(ckpt.kind, "torch file")
    console.print(
        f"[bold]{ckpt.path}[/bold]  {human_bytes(ckpt.file_size)}  (not a safetensors file: "
        f"a {kind}, read as data: "
        f"{human_bytes(ckpt.bytes_read)} read, never unpickled)"
    )
    unsafe = ckpt.unsafe_globals()
    if unsafe:
        console.print(
            "[bold red]UNSAFE[/bold red]: the pickle names "
            + ", ".join(f"{g.qualname}" for g in unsafe)
            + " — loading it with torch.load(weights_only=False) would run them"
        )
    other = ckpt.unrecognised_globals()
    if other:
        console.print("unrecognised globals (torch.load(weights_only=True) refuses them): "
                      + ", ".join(g.qualname for g in other[:10]))
    if ckpt.rule != "ok":
        console.print(f"[bold red]INVALID[/bold red] ({ckpt.rule}): {ckpt.message}")
        return
    tensors = ckpt.tensors()
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("tensor", overflow="fold")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("size", justify="right")
    table.add_column("storage", justify="right")
    for t in tensors:
        bits = DTYPE_BITS.get(t.dtype, 0)
        table.add_row(
            t.name, t.dtype, human_shape(t.shape), human_bytes(t.numel * bits // 8),
            t.storage_key if not t.storage_offset else f"{t.storage_key}+{t.storage_offset}",
        )
    console.print(table)
    for p in ckpt.problems():
        console.print(f"[bold red]{p.rule}[/bold red]: {p.message}")
    dtypes = Counter(t.dtype for t in tensors)
    mix = ", ".join(f"{n} {d}" for d, n in dtypes.most_common())
    verdict = "[green]valid[/green]" if ckpt.ok else "[bold red]broken[/bold red]"
    console.print(f"[bold]{len(tensors)} tensors[/bold] ({mix or 'none'}): {verdict}")


def neither_json(path: str, size: int) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "path": path, "format": None, "ok": False, "rule": "not-a-checkpoint",
        "error": "not a safetensors or torch file", "file_bytes": size, "tensors": {},
    }


# --- sharded training states: a DCP folder, a DeepSpeed global_step folder ----------------


def dcp_inspect_json(dcp: DcpCheckpoint) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "path": dcp.path,
        "format": "dcp",
        "ok": dcp.ok,
        "rule": dcp.rule,
        "error": dcp.metadata.message,
        "problems": [
            {"rule": p.rule, "tensor": p.tensor, "message": p.message} for p in dcp.problems
        ],
        "files": {rel: size for rel, size in sorted(dcp.file_sizes.items())},
        "objects": list(dcp.objects),
        "tensors": {
            t.fqn: {"dtype": t.dtype, "shape": list(t.shape), "chunks": len(t.chunks)}
            for t in dcp.tensors.values()
        },
    }


def print_dcp_inspect(dcp: DcpCheckpoint, console: Console) -> None:
    present = sum(1 for s in dcp.file_sizes.values() if s is not None)
    console.print(
        f"[bold]{dcp.path}[/bold]  torch.distributed.checkpoint state: .metadata read as data "
        f"(never unpickled); {len(dcp.tensors)} tensors, {len(dcp.objects)} other entries, "
        f"{present} of {len(dcp.file_sizes)} shard files present"
    )
    if dcp.rule != "ok":
        console.print(f"[bold red]INVALID[/bold red] ({dcp.rule}): {dcp.metadata.message}")
        return
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("tensor", overflow="fold")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("chunks", justify="right")
    for t in dcp.tensors.values():
        table.add_row(t.fqn, t.dtype or "?", human_shape(t.shape), str(len(t.chunks)))
    console.print(table)
    for p in dcp.problems:
        console.print(f"[bold red]{p.rule}[/bold red]: {p.message}")


def deepspeed_inspect_json(step: DeepSpeedStep) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "path": step.path,
        "format": "deepspeed",
        "ok": step.partitions_complete and not step.problems,
        "step": step.step,
        "stage": step.stage,
        "ds_version": step.ds_version,
        "world_size": step.world_size,
        "recorded_world_size": step.recorded_world_size,
        "missing_ranks": step.missing_ranks,
        "model_files": sorted([*step.model_files.values(), *step.zero3_model_files.values()]),
        "optimizer_files": sorted(step.optim_files.values()),
        "parameters": step.param_count,
        "parameter_elements": step.param_numel,
        "partition_elements": {str(r): n for r, n in sorted(step.partition_numel.items())},
        "problems": [
            {"rule": p.rule, "tensor": p.tensor, "message": p.message} for p in step.problems
        ],
    }


def print_deepspeed_inspect(step: DeepSpeedStep, console: Console) -> None:
    stage = f"ZeRO-{step.stage}" if step.stage is not None else "ZeRO (stage not recorded)"
    version = f", DeepSpeed {step.ds_version}" if step.ds_version else ""
    console.print(
        f"[bold]{step.path}[/bold]  DeepSpeed {stage} state{version}: records read as data "
        "(never unpickled)"
    )
    recorded = (
        f" (the records say {step.recorded_world_size})"
        if step.recorded_world_size not in (None, step.world_size)
        else ""
    )
    console.print(f"data-parallel ranks: {step.world_size}{recorded}")
    models = sorted([*step.model_files.values(), *step.zero3_model_files.values()])
    console.print(f"model states: {len(models)} file(s): {', '.join(models[:4])}")
    console.print(
        f"parameters (param_shapes): {step.param_count:,}, {step.param_numel:,} elements"
    )
    console.print(
        f"optimizer partitions: {len(step.optim_files)} of {step.world_size}, "
        f"{step.covered_numel:,} fp32 elements"
        + (f"; ranks missing: {step.missing_ranks}" if step.missing_ranks else "")
    )
    if step.partitions_complete and step.covered_numel >= step.param_numel:
        console.print("complete: zero_to_fp32 can rebuild the weights from it")
    for p in step.problems:
        console.print(f"[bold red]{p.rule}[/bold red]: {p.message}")
