"""GPU health of this rank's device, read through NVML at scrape time (not in the training step).

Uses `pynvml` (the `nvidia-ml-py` package) when it imports and NVML initialises; otherwise the collector
yields nothing, so a CPU run or a machine without the driver simply has no GPU series — never an error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

GPU_METRICS = (
    "dist_vgg_gpu_memory_used_bytes",
    "dist_vgg_gpu_memory_total_bytes",
    "dist_vgg_gpu_utilization_ratio",
    "dist_vgg_gpu_power_watts",
    "dist_vgg_gpu_temperature_celsius",
)
"""Every series this module can export (dashboards and tests refer to these names)."""


def _nvml_handle(index: int):
    """(pynvml module, device handle) of CUDA device `index` as this process numbers it, or None when NVML
    is not usable here. NVML numbers every GPU of the node and ignores CUDA_VISIBLE_DEVICES, so the device is
    matched by UUID through torch when CUDA is initialised, else taken by position."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no GPU series, by design
        log.debug("NVML unavailable (%s): no GPU metrics", e)
        return None
    try:
        uuid = _torch_uuid(index)
        if uuid is not None:
            return pynvml, pynvml.nvmlDeviceGetHandleByUUID(uuid)
        if index < pynvml.nvmlDeviceGetCount():
            return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception as e:
        log.debug("NVML has no handle for CUDA device %d (%s): no GPU metrics", index, e)
    return None


def current_device(default: int) -> int:
    """The CUDA device this process trains on (torch's current device once CUDA is initialised, e.g. after
    NCCL's process group is up), else `default` (the local rank). Never imports torch itself: a process that
    has not loaded it trains on no GPU, and the import costs seconds."""
    torch = sys.modules.get("torch")
    if torch is None:
        return default
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.current_device()
    return default


def _torch_uuid(index: int) -> str | None:
    """NVML's name ("GPU-<uuid>") of torch's CUDA device `index`, when torch is loaded and has CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or index >= torch.cuda.device_count():
        return None
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return None if uuid is None else f"GPU-{uuid}"


class GpuCollector(Collector):
    """`dist_vgg_gpu_*` gauges for one device, labelled like the rank's other series."""

    def __init__(self, device_index: int, labels: dict[str, str]) -> None:
        self.labels = dict(labels)
        self._nvml = _nvml_handle(device_index)

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Lets registration succeed without a collect(); names are fixed.
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._nvml is None:
            return
        nv, h = self._nvml
        names, values = list(self.labels), list(self.labels.values())

        def read(fn, *args):
            try:
                return fn(h, *args)
            except Exception:  # a field this GPU does not support (e.g. power on some boards): skip it
                return None

        mem = read(nv.nvmlDeviceGetMemoryInfo)
        util = read(nv.nvmlDeviceGetUtilizationRates)
        power_mw = read(nv.nvmlDeviceGetPowerUsage)
        temp = read(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU)
        series = [
            ("dist_vgg_gpu_memory_used_bytes", "GPU memory in use", mem and mem.used),
            ("dist_vgg_gpu_memory_total_bytes", "GPU memory installed", mem and mem.total),
            ("dist_vgg_gpu_utilization_ratio", "Share of time a kernel ran (0-1)", util and util.gpu / 100.0),
            ("dist_vgg_gpu_power_watts", "GPU power draw", None if power_mw is None else power_mw / 1000.0),
            ("dist_vgg_gpu_temperature_celsius", "GPU core temperature", temp),
        ]
        for name, doc, value in series:
            if value is None:
                continue
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(values, float(value))
            yield g
