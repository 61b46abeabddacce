"""The XLA flags of this suite's CPU processes: its own (conftest) and those its tests start."""
import importlib.metadata


def xla_flags(devices: int) -> str:
  """`devices` simulated CPU devices, and XLA:CPU's older loop emitters where jaxlib has them.
  jaxlib 0.10's XLA emits fused loops through its newer MLIR emitters unless told otherwise;
  its older ones compile this suite's small programs in about two thirds of the time and run
  them as fast (docs/performance.md, "Test suite"). jaxlib 0.11's XLA has only the newer ones and
  aborts on the flag ("Unknown flag in XLA_FLAGS"), so it is given to older jaxlibs only."""
  flags = [f"--xla_force_host_platform_device_count={devices}"]
  major, minor = (int(part) for part in importlib.metadata.version("jaxlib").split(".")[:2])
  if (major, minor) < (0, 11):
    flags.append("--xla_cpu_use_fusion_emitters=false")
  return " ".join(flags)
